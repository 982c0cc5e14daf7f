package controller

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// memPods is a PodSource in memory that records, as podcache does, the namespaces whose
// Pods change.
type memPods struct {
	mu      sync.Mutex
	pods    map[string]map[string]*podspec.Running
	changed map[string]bool
}

func (m *memPods) Pods(_ context.Context, ns string) ([]*podspec.Running, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.pods[ns])), nil
}

func (m *memPods) Follow() func() map[string]bool {
	return func() map[string]bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		out := m.changed
		m.changed = map[string]bool{}
		return out
	}
}

func (m *memPods) put(p *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pods[p.Namespace] == nil {
		m.pods[p.Namespace] = map[string]*podspec.Running{}
	}
	m.pods[p.Namespace][p.Name] = podspec.NewRunning(p)
	m.changed[p.Namespace] = true
}

func (m *memPods) remove(ns, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pods[ns], name)
	m.changed[ns] = true
}

// everything is memPods' view for an audit that knows no changes (a fresh full pass).
type everything struct{ *memPods }

func (everything) Follow() func() map[string]bool { return func() map[string]bool { return nil } }

// summary is what a pass found, in a form two passes compare by.
func summary(r *passResult) map[string]any {
	out := map[string]any{"pods": r.total.pods, "running": r.running, "relying": r.total.relying, "earliest": r.earliest}
	for ref, p := range r.total.results {
		if p.violations > 0 || len(p.samples) > 0 {
			out["violations "+ref.String()] = p.violations
			out["samples "+ref.String()] = keepFirst(slices.Clone(p.samples))
		}
	}
	for ref, n := range r.total.uncertain {
		out["uncertain "+ref.String()] = n
	}
	if r.reports != nil {
		for ns, rn := range r.reports.namespaces {
			if rn != nil && len(rn.entries) > 0 {
				out["report "+ns] = slices.Sorted(maps.Keys(rn.entries))
			}
		}
	}
	return out
}

// TestIncrementalAuditMatchesAFullPass is a differential test of the incremental audit: after
// each of hundreds of random changes (Pods created, deleted, relabelled, their running digest
// changed; namespaces relabelled; the policies changed; an exception expiring), a pass that
// keeps what did not change finds exactly what a fresh pass over every Pod finds, and judges
// only the namespaces that changed.
func TestIncrementalAuditMatchesAFullPass(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	var objs []client.Object
	for _, n := range names {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"env": "dev"}}})
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: 1}
	}
	allow := v1alpha1.ClusterImagePolicy{ObjectMeta: meta("allow"), Spec: v1alpha1.ImagePolicySpec{
		Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**", "ghcr.io/signed/**"}}}}
	prod := v1alpha1.ClusterImagePolicy{ObjectMeta: meta("prod"), Spec: v1alpha1.ImagePolicySpec{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
		Tags:              v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}}}}
	web := v1alpha1.ClusterImagePolicy{ObjectMeta: meta("web"), Spec: v1alpha1.ImagePolicySpec{
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, RequireDigest: ptr.To(true)}}
	signed := v1alpha1.ClusterImagePolicy{ObjectMeta: meta("signed"), Spec: v1alpha1.ImagePolicySpec{
		Verify: v1alpha1.VerifyRules{Images: []v1alpha1.ImagePattern{"ghcr.io/signed/**"},
			Signers:         []v1alpha1.Signer{{Name: "ci", Key: v1alpha1.KeySigner{PublicKey: "not a key"}}},
			TransparencyLog: v1alpha1.TransparencyLogSkip}}}
	exception := v1alpha1.ImagePolicyException{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "a", UID: "uid-ex"},
		Spec: v1alpha1.ImagePolicyExceptionSpec{Reason: "migrating", ExpiresAt: &metav1.Time{Time: now.Add(time.Hour)},
			Images: []v1alpha1.ImagePattern{"quay.io/**"}, Policies: []v1alpha1.ExceptedPolicy{{Kind: policy.KindClusterImagePolicy, Name: "allow"}}}}
	sets := [][]v1alpha1.ClusterImagePolicy{{allow, prod, web, signed}, {allow, prod}, {web, signed}}
	snaps := make([]*policy.Snapshot, len(sets))
	for i, set := range sets {
		snaps[i] = policy.CompileWith(set, nil, policy.Options{Exceptions: []v1alpha1.ImagePolicyException{exception}, Now: clock})
	}

	pods := &memPods{pods: map[string]map[string]*podspec.Running{}, changed: map[string]bool{}}
	images := []string{"ghcr.io/acme/web:1", "ghcr.io/acme/web:latest", "quay.io/x/y:1", "ghcr.io/signed/app:1",
		"ghcr.io/acme/db@sha256:" + fmt.Sprintf("%064x", 7), "docker.io/library/nginx:latest"}
	rng := rand.New(rand.NewPCG(1, 2))
	makePod := func(ns, name string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
			Labels: map[string]string{"app": []string{"web", "db"}[rng.IntN(2)]}}}
		for i := range 1 + rng.IntN(2) {
			img := images[rng.IntN(len(images))]
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprint("c", i), Image: img})
			if rng.IntN(2) == 0 {
				p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
					Name: fmt.Sprint("c", i), ImageID: "ghcr.io/signed/app@sha256:" + fmt.Sprintf("%064x", rng.IntN(3))})
			}
		}
		if rng.IntN(10) == 0 {
			p.Status.Phase = corev1.PodSucceeded
		}
		return p
	}
	for i := range 40 {
		ns := names[rng.IntN(len(names))]
		pods.put(makePod(ns, fmt.Sprint("p", i)))
	}

	ctx := context.Background()
	incremental := &Auditor{Client: c, Cache: c, Pods: pods, Reports: &Reporter{}, Now: clock}
	snap := snaps[0]
	judgedLess := 0
	for step := range 400 {
		var what string
		expectAll := false
		switch k := rng.IntN(10); {
		case k < 3:
			ns := names[rng.IntN(len(names))]
			what = "put a Pod in " + ns
			pods.put(makePod(ns, fmt.Sprint("p", rng.IntN(60))))
		case k < 5:
			ns := names[rng.IntN(len(names))]
			list, _ := pods.Pods(ctx, ns)
			if len(list) > 0 {
				what = "delete a Pod of " + ns
				pods.remove(ns, list[rng.IntN(len(list))].Name)
			}
		case k < 6:
			var n corev1.Namespace
			name := names[rng.IntN(len(names))]
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
				t.Fatal(err)
			}
			n.Labels["env"] = []string{"dev", "prod"}[rng.IntN(2)]
			if err := c.Update(ctx, &n); err != nil {
				t.Fatal(err)
			}
			what = "label namespace " + name + " env=" + n.Labels["env"]
		case k < 7:
			i := rng.IntN(len(snaps))
			what, expectAll = fmt.Sprint("policies ", i), snap != snaps[i]
			snap = snaps[i]
		case k < 8:
			now = now.Add(time.Duration(rng.IntN(40)) * time.Minute)
			what = "time " + now.Format(time.TimeOnly)
		default:
			what = "nothing"
		}
		crossed := exceptionsChanged(snap, incremental.memo.at, now)
		got, err := incremental.pass(ctx, snap, now)
		if err != nil {
			t.Fatal(err)
		}
		fresh := &Auditor{Client: c, Cache: c, Pods: everything{pods}, Reports: &Reporter{}, Now: clock}
		want, err := fresh.pass(ctx, snap, now)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := summary(got), summary(want); !equalSummaries(g, w) {
			t.Fatalf("step %d (%s): the incremental pass found\n%v\na full pass found\n%v", step, what, g, w)
		}
		if (expectAll || crossed) && got.judged != want.judged {
			t.Fatalf("step %d (%s): judged %d namespaces after a change of the policies or exceptions in force, want all %d", step, what, got.judged, want.judged)
		}
		if what == "nothing" && got.judged != 0 {
			t.Fatalf("step %d: judged %d namespaces though nothing changed", step, got.judged)
		}
		if got.judged < want.judged {
			judgedLess++
		}
	}
	if judgedLess < 100 {
		t.Fatalf("only %d of 400 passes kept a namespace's verdicts", judgedLess)
	}
}

func equalSummaries(a, b map[string]any) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}
