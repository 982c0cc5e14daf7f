package podspec

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/imagegate/imagegate/internal/policy"
)

// Running is what imagegate keeps of a Pod in the cluster: what the audit, the policy change
// preflight and the Reports read, and nothing else. It is purpose-built so that a cache of
// every Pod of a cluster at Kubernetes' scalability limit (150,000) stays small: a few
// hundred bytes, where a corev1.Pod trimmed to the same fields costs kilobytes in Go's
// structs alone (a PodSpec, a PodStatus, one Container per image). make sizing measures the
// manager's resident memory per 10,000 Pods. The strings many Pods share (label
// keys and values, image references, container names, digests, owners, field paths) are
// interned, and Pods with the same labels share one map of them, so a Deployment's thousand
// replicas hold one copy of each.
//
// It is a runtime.Object and a metav1.Object (its ObjectMeta holds the name, the namespace,
// the UID, the resourceVersion, the labels and the controller alone), so a client-go
// informer stores it in place of the Pod (see Slim).
type Running struct {
	metav1.ObjectMeta
	// Finished says the Pod has ended (Succeeded or Failed): nothing restarts it, nothing
	// judges it, and it keeps no labels and no images.
	Finished bool
	// BreakGlass says the Pod asks for break-glass (policy.BreakGlassRequested).
	BreakGlass bool
	// Images are PodImages(spec, "spec") with the digest each container runs (SetRunning).
	Images []policy.Image
}

var _ runtime.Object = &Running{}

// GetObjectKind has no kind to tell: a Running is never encoded.
func (r *Running) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies r; the strings it shares with other records are immutable.
func (r *Running) DeepCopyObject() runtime.Object {
	out := *r
	r.DeepCopyInto(&out.ObjectMeta)
	out.Images = slices.Clone(r.Images)
	return &out
}

// Controller is the Pod's controller (a ReplicaSet, a Job...), or nil.
func (r *Running) Controller() *metav1.OwnerReference {
	if len(r.OwnerReferences) == 0 {
		return nil
	}
	return &r.OwnerReferences[0]
}

// Subject is the Pod as the audit, the preflight and imagegate check --running judge it, in a
// namespace with labels nsLabels; false for a finished Pod. The Subject shares r's labels and
// images: it must not be changed.
func (r *Running) Subject(nsLabels map[string]string) (policy.Subject, bool) {
	if r.Finished {
		return policy.Subject{}, false
	}
	return policy.Subject{
		Namespace: r.Namespace, NamespaceLabels: nsLabels, PodLabels: r.Labels,
		Images: r.Images, BreakGlass: r.BreakGlass,
	}, true
}

// Same reports whether r and o would be judged alike: same labels, images, running digests,
// break-glass request, phase and controller. An update of a Pod that changes none of them
// (most status updates) changes no verdict.
func (r *Running) Same(o *Running) bool {
	return r.Finished == o.Finished && r.BreakGlass == o.BreakGlass && r.UID == o.UID &&
		maps.Equal(r.Labels, o.Labels) && slices.Equal(r.Images, o.Images) &&
		slices.EqualFunc(r.OwnerReferences, o.OwnerReferences, func(a, b metav1.OwnerReference) bool {
			return a.APIVersion == b.APIVersion && a.Kind == b.Kind && a.Name == b.Name && a.UID == b.UID
		})
}

// Slim is a cache transform (client-go's SharedInformer SetTransform) that turns a
// *corev1.Pod into a *Running; anything else is returned as it is.
func Slim(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return NewRunning(pod), nil
}

// NewRunning keeps of pod what Running holds.
func NewRunning(pod *corev1.Pod) *Running {
	r := &Running{ObjectMeta: metav1.ObjectMeta{
		Name: pod.Name, Namespace: intern(pod.Namespace), UID: pod.UID, ResourceVersion: pod.ResourceVersion,
	}}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		r.Finished = true
		return r
	}
	r.Labels = labelSets.get(pod.Labels)
	// The controller, which Reports name results by.
	if owner := metav1.GetControllerOfNoCopy(pod); owner != nil {
		r.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: intern(owner.APIVersion), Kind: intern(owner.Kind), Name: intern(owner.Name), UID: owner.UID, Controller: &isController,
		}}
	}
	r.BreakGlass = policy.BreakGlassRequested(pod.Annotations)
	r.Images = PodImages(&pod.Spec, "spec")
	SetRunning(r.Images, &pod.Status)
	for i := range r.Images {
		img := &r.Images[i]
		img.Field, img.Ref, img.Container, img.Running = intern(img.Field), intern(img.Ref), intern(img.Container), intern(img.Running)
	}
	return r
}

// isController is the Controller field of every record's owner reference.
var isController = true

// labelSets shares one map between the records of Pods with the same labels (the replicas of
// a ReplicaSet, a StatefulSet, a DaemonSet, a Job): a map of three labels costs more than
// the rest of a record. It holds at most labelSetsMax sets and starts again when full, so
// Pods that come and go never grow it; a record keeps its map whatever the table forgets.
var labelSets = &labelTable{}

const labelSetsMax = 4096

type labelTable struct {
	mu   sync.Mutex
	sets map[string]map[string]string
}

// get returns a map equal to labels that other records may share: it must not be changed.
func (t *labelTable) get(labels map[string]string) map[string]string {
	if len(labels) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	key := b.String()
	t.mu.Lock()
	defer t.mu.Unlock()
	if m, ok := t.sets[key]; ok {
		return m
	}
	if t.sets == nil || len(t.sets) >= labelSetsMax {
		t.sets = make(map[string]map[string]string, 64)
	}
	m := make(map[string]string, len(labels))
	for k, v := range labels {
		m[intern(k)] = intern(v)
	}
	t.sets[key] = m
	return m
}

// intern returns the canonical copy of s: the records of many Pods share it.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
