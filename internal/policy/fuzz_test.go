package policy

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
)

// FuzzEvaluate is differential: a policy that allows one pattern and denies another must
// decide every image exactly as the plain matcher (imageref.Pattern.Match) does, so the indexed
// trie can never admit what the patterns do not allow. It also must never panic.
func FuzzEvaluate(f *testing.F) {
	f.Add("ghcr.io/acme/**", "ghcr.io/acme/legacy/*", "ghcr.io/acme/legacy/app:1")
	f.Add("nginx", "docker.io/**:latest", "nginx")
	f.Add("registry.corp:5000/*/app", "x", "registry.corp:5000/team/app@"+digestA)
	f.Add("**", "*", "acme/app")
	f.Fuzz(func(t *testing.T, allow, deny, img string) {
		ap, aerr := imageref.ParsePattern(allow)
		dp, derr := imageref.ParsePattern(deny)
		if aerr != nil || derr != nil {
			return
		}
		snap := Compile([]v1alpha1.ClusterImagePolicy{{
			ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec: v1alpha1.ImagePolicySpec{Images: &v1alpha1.ImageRules{
				Allow: []v1alpha1.ImagePattern{v1alpha1.ImagePattern(allow)},
				Deny:  []v1alpha1.ImagePattern{v1alpha1.ImagePattern(deny)},
			}},
		}}, nil)
		d := snap.Evaluate(&Subject{Namespace: "a", Images: []Image{{Field: "spec.containers[0].image", Ref: img}}})
		ref, err := imageref.Parse(img)
		want := err == nil && ap.Match(&ref) && !dp.Match(&ref)
		if d.Allowed() != want {
			t.Fatalf("allow %q deny %q image %q: admitted=%v, patterns say %v (%v)", allow, deny, img, d.Allowed(), want, d.Violations)
		}
	})
}
