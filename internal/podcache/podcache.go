// Package podcache is the manager's cache of the cluster's Pods, as the audit and the policy
// change preflight read them: a client-go informer whose store holds podspec.Running records
// (a few hundred bytes each, not a corev1.Pod), indexed by namespace, that also records which
// namespaces' Pods changed in a way that can change a verdict, so that the audit re-judges
// only those.
package podcache

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/internal/podspec"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch

// Cache is the cache of Pods. It runs from Start (a manager.Runnable) until its context ends.
type Cache struct {
	informer toolscache.SharedIndexInformer
	leader   bool
	started  chan struct{}

	mu       sync.Mutex
	watchers []map[string]bool // per Follow: the namespaces whose Pods changed since its last take
}

// New makes a cache of the Pods the config's identity may list and watch, read as Protocol
// Buffers (the cheapest encoding to decode). leaderOnly runs it on the leader alone (the
// audit's replica); else every replica (the preflight answers from each one's cache).
func New(config *rest.Config, leaderOnly bool) (*Cache, error) {
	cfg := rest.CopyConfig(config)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("making the client of the Pod cache: %w", err)
	}
	return NewWithClient(cs, leaderOnly)
}

// NewWithClient is New with a client of its own.
func NewWithClient(cs kubernetes.Interface, leaderOnly bool) (*Cache, error) {
	informer := coreinformers.NewPodInformer(cs, corev1.NamespaceAll, 0, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
	if err := informer.SetTransform(podspec.Slim); err != nil {
		return nil, err
	}
	c := &Cache{informer: informer, leader: leaderOnly, started: make(chan struct{})}
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.touch(obj) },
		UpdateFunc: func(before, after any) {
			b, okb := before.(*podspec.Running)
			a, oka := after.(*podspec.Running)
			if okb && oka && b.Same(a) {
				return // a status update that changes no verdict
			}
			c.touch(after)
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			c.touch(obj)
		},
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cache) touch(obj any) {
	if r, ok := obj.(*podspec.Running); ok {
		c.mu.Lock()
		for _, w := range c.watchers {
			w[r.Namespace] = true
		}
		c.mu.Unlock()
	}
}

// NeedLeaderElection says whether the cache runs on the leader alone.
func (c *Cache) NeedLeaderElection() bool { return c.leader }

// Start runs the informer until ctx ends.
func (c *Cache) Start(ctx context.Context) error {
	close(c.started)
	c.informer.RunWithContext(ctx)
	return nil
}

// errNotStarted is returned by a read of a cache that is not running (a replica that is not
// the leader, for a leader-only cache).
var errNotStarted = errors.New("the Pod cache is not running on this replica")

// synced waits until the cache holds every Pod, or ctx ends.
func (c *Cache) synced(ctx context.Context) error {
	select {
	case <-c.started:
	case <-ctx.Done():
		return errNotStarted
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return fmt.Errorf("the Pod cache is still loading: %w", ctx.Err())
	}
	return nil
}

// Pods returns the Pods of a namespace, once the cache holds every Pod. The records are the
// cache's own: they must not be changed.
func (c *Cache) Pods(ctx context.Context, namespace string) ([]*podspec.Running, error) {
	if err := c.synced(ctx); err != nil {
		return nil, err
	}
	objs, err := c.informer.GetIndexer().ByIndex(toolscache.NamespaceIndex, namespace)
	if err != nil {
		return nil, err
	}
	out := make([]*podspec.Running, 0, len(objs))
	for _, o := range objs {
		if r, ok := o.(*podspec.Running); ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// Follow starts recording the namespaces whose Pods are added, deleted, or changed in what a
// verdict reads. take returns those recorded since its previous call (or since Follow) and
// forgets them. The audit follows the cache and re-judges those namespaces alone.
func (c *Cache) Follow() (take func() map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.watchers)
	c.watchers = append(c.watchers, map[string]bool{})
	return func() map[string]bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		out := c.watchers[i]
		c.watchers[i] = map[string]bool{}
		return out
	}
}

// Reader lists Pods with a controller-runtime reader (a client, a fake client in tests) and
// makes podspec.Running records of them, with no cache of its own. It cannot tell what
// changed: its take always returns nil, which means every namespace.
type Reader struct {
	client.Reader
}

// Pods lists the Pods of a namespace.
func (r Reader) Pods(ctx context.Context, namespace string) ([]*podspec.Running, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	out := make([]*podspec.Running, len(list.Items))
	for i := range list.Items {
		out[i] = podspec.NewRunning(&list.Items[i])
	}
	return out, nil
}

// Follow returns a take that knows nothing: nil, every namespace.
func (Reader) Follow() func() map[string]bool { return func() map[string]bool { return nil } }
