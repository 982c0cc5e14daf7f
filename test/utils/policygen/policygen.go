// Package policygen makes the ClusterImagePolicies that the engine's benchmarks and `make
// sizing` load by the thousand: many distinct policies of the kind a platform team writes, so
// that figures for n policies from either tool describe the same set.
package policygen

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// Team is policy i, named prefix-<i, four digits>: it allows team i's repositories on ghcr.io
// and its own registry, and the shared ghcr.io/acme, and refuses the tag latest.
func Team(prefix string, i int) v1alpha1.ClusterImagePolicy {
	return v1alpha1.ClusterImagePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%04d", prefix, i)},
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

// Teams is policies 0 to n-1 (see Team).
func Teams(prefix string, n int) []v1alpha1.ClusterImagePolicy {
	out := make([]v1alpha1.ClusterImagePolicy, n)
	for i := range out {
		out[i] = Team(prefix, i)
	}
	return out
}
