package policy

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/test/utils/policygen"
)

// benchPolicies makes n distinct ClusterImagePolicies of the kind a platform team writes (the
// set `make sizing` loads too).
func benchPolicies(n int) []v1alpha1.ClusterImagePolicy { return policygen.Teams("team", n) }

// BenchmarkEvaluate evaluates an admitted 3-container Pod against 1 to 1,000 policies.
func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			snap := Compile(benchPolicies(n), nil)
			sub := &Subject{
				Namespace:       "team-a",
				NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "team-a"},
				Images:          containers("ghcr.io/acme/web:1.4.2", "ghcr.io/acme/sidecar/proxy:2.0", "ghcr.io/acme/tools@"+digestA),
			}
			b.ReportAllocs()
			for b.Loop() {
				d := snap.Evaluate(sub)
				if !d.Allowed() {
					b.Fatal(d.Violations[0].Message())
				}
			}
		})
	}
}

// BenchmarkEvaluateDenied is the same Pod with one image from nowhere: the cost of building
// the violations a user reads, which must grow linearly with the policies that refuse it.
func BenchmarkEvaluateDenied(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			snap := Compile(benchPolicies(n), nil)
			sub := &Subject{Namespace: "team-a", Images: containers("ghcr.io/acme/web:1.4.2", "quay.io/evil/miner:latest", "ghcr.io/acme/tools:1")}
			b.ReportAllocs()
			for b.Loop() {
				if d := snap.Evaluate(sub); d.Allowed() {
					b.Fatal("admitted")
				}
			}
		})
	}
}

// BenchmarkCompile measures building a snapshot, which happens once per policy change.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			ps := benchPolicies(n)
			b.ReportAllocs()
			for b.Loop() {
				Compile(ps, nil)
			}
		})
	}
}

// BenchmarkDenialMessage is what the webhook sends back for a Pod that 1 to 1,000 policies
// refuse: evaluation plus the message, capped at MaxMessages lines and a count.
func BenchmarkDenialMessage(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			snap := Compile(benchPolicies(n), nil)
			sub := &Subject{Namespace: "team-a", Images: containers("ghcr.io/acme/web:1.4.2", "quay.io/evil/miner:latest", "ghcr.io/acme/tools:1")}
			b.ReportAllocs()
			size := 0
			for b.Loop() {
				d := snap.Evaluate(sub)
				size = len(d.DenialMessage())
			}
			b.ReportMetric(float64(size), "message-bytes")
		})
	}
}

// BenchmarkScale compiles 10,000 ClusterImagePolicies, and 10,000 ImagePolicies spread over
// 1,000 namespaces, and evaluates an admitted and a refused 3-container Pod against each set.
// It reports the compile time and the heap the snapshot holds.
func BenchmarkScale(b *testing.B) {
	namespacedPolicies := func(n, namespaces int) []v1alpha1.ImagePolicy {
		out := make([]v1alpha1.ImagePolicy, n)
		for i, p := range benchPolicies(n) {
			out[i] = v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: fmt.Sprintf("ns-%04d", i%namespaces)}, Spec: p.Spec}
		}
		return out
	}
	for _, c := range []struct {
		name       string
		cluster    []v1alpha1.ClusterImagePolicy
		namespaced []v1alpha1.ImagePolicy
	}{
		{"cluster=10000", benchPolicies(10000), nil},
		{"namespaced=10000/ns=1000", nil, namespacedPolicies(10000, 1000)},
	} {
		b.Run(c.name, func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			snap := Compile(c.cluster, c.namespaced)
			compile := time.Since(start)
			runtime.GC()
			runtime.ReadMemStats(&after)
			ns := map[string]string{"kubernetes.io/metadata.name": "ns-0007"}
			admitted := &Subject{Namespace: "ns-0007", NamespaceLabels: ns, Images: containers("ghcr.io/acme/web:1.4.2", "ghcr.io/acme/sidecar/proxy:2.0", "ghcr.io/acme/tools@"+digestA)}
			refused := &Subject{Namespace: "ns-0007", NamespaceLabels: ns, Images: containers("ghcr.io/acme/web:1.4.2", "quay.io/evil/miner:1", "ghcr.io/acme/tools:1")}
			for _, s := range []struct {
				name string
				sub  *Subject
				ok   bool
			}{{"admitted", admitted, true}, {"refused", refused, false}} {
				b.Run(s.name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if d := snap.Evaluate(s.sub); d.Allowed() != s.ok {
							b.Fatalf("allowed = %v", d.Allowed())
						}
					}
					b.ReportMetric(compile.Seconds()*1000, "compile-ms")
					b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "snapshot-MiB")
				})
			}
			runtime.KeepAlive(snap)
		})
	}
}
