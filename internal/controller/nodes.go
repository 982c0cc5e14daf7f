package controller

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// NodePlatforms keeps the platforms ("linux/amd64") the cluster's nodes run, from their
// kubernetes.io/os and kubernetes.io/arch labels (the kubelet sets both), for verify rules
// that trust an image index by its platform manifests (indexTrust Platforms or Either).
// Only the Nodes' metadata is cached.
type NodePlatforms struct {
	mu     sync.Mutex
	byNode map[string]string
	list   atomic.Pointer[[]string]
}

// Platforms returns the distinct platforms of the nodes, sorted; nil before any node is
// known.
func (n *NodePlatforms) Platforms() []string {
	if p := n.list.Load(); p != nil {
		return *p
	}
	return nil
}

// NodeMetadata is what to ask the cache for: Nodes, metadata only.
func NodeMetadata() *metav1.PartialObjectMetadata {
	o := &metav1.PartialObjectMetadata{}
	o.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	return o
}

// Watch follows the Nodes of the informer (from NodeMetadata).
func (n *NodePlatforms) Watch(informer cache.Informer) error {
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.set(obj, false) },
		UpdateFunc: func(_, obj any) { n.set(obj, false) },
		DeleteFunc: func(obj any) { n.set(obj, true) },
	})
	return err
}

func (n *NodePlatforms) set(obj any, deleted bool) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byNode == nil {
		n.byNode = map[string]string{}
	}
	os, arch := m.GetLabels()[corev1.LabelOSStable], m.GetLabels()[corev1.LabelArchStable]
	if deleted || os == "" || arch == "" {
		delete(n.byNode, m.GetName())
	} else {
		n.byNode[m.GetName()] = os + "/" + arch
	}
	list := slices.Sorted(maps.Values(n.byNode))
	list = slices.Compact(list)
	if old := n.Platforms(); !slices.Equal(old, list) {
		n.list.Store(&list)
	}
}
