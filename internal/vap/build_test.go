package vap

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

// TestExpressionsWithinTheAPIServersLimit: however long a policy's rules, no generated
// expression passes the apiserver's 100,000 characters (it would refuse the object, and the
// policy would be in neither place): a policy beyond maxExpression stays in the webhook and
// says why. A podSelector writes a policy's rules twice (changed images, then the others of a
// relabelled Pod), so the whole expression is what counts.
func TestExpressionsWithinTheAPIServersLimit(t *testing.T) {
	kept := 0
	for _, n := range []int{50, 150, 250, 350, 450} {
		deny := make([]string, n)
		for i := range deny {
			deny[i] = fmt.Sprintf("registry-%d.corp/team-%d/app-%d", i, i, i)
		}
		spec := v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Deny: patterns(deny...)},
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
		snap := policy.Compile([]v1alpha1.ClusterImagePolicy{cluster("long", spec)}, nil)
		plan := Build(snap.NameRules(fixedNow), Options{})
		for _, p := range plan.Policies {
			for _, v := range p.Spec.Variables {
				if len(v.Expression) > maxExpression {
					t.Fatalf("%d deny patterns: variable %s of %s is %d characters, past %d", n, v.Name, p.Name, len(v.Expression), maxExpression)
				}
			}
		}
		ref := policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "long"}
		_, compiled := plan.Compiled[ref]
		why, inWebhook := plan.Webhook[ref]
		if compiled == inWebhook {
			t.Fatalf("%d deny patterns: compiled %v, in the webhook %v (%q): want exactly one", n, compiled, inWebhook, why)
		}
		if inWebhook {
			kept++
		}
	}
	if kept == 0 {
		t.Fatal("no size reached maxExpression: the test does not reach the limit")
	}
}
