package policy

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// benchPolicies makes n distinct ClusterImagePolicies of the kind a platform team writes: each
// allows its team's repositories and a shared registry, and refuses :latest.
func benchPolicies(n int) []v1alpha1.ClusterImagePolicy {
	out := make([]v1alpha1.ClusterImagePolicy, n)
	for i := range out {
		out[i] = v1alpha1.ClusterImagePolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%04d", i)},
			Spec: v1alpha1.ImagePolicySpec{
				Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{
					v1alpha1.ImagePattern(fmt.Sprintf("ghcr.io/team-%d/*", i)),
					v1alpha1.ImagePattern(fmt.Sprintf("registry-%d.corp:5000/**", i)),
					"ghcr.io/acme/**",
				}},
				Tags: v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}},
			},
		}
	}
	return out
}

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
