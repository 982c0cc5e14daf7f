package policy

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
	"github.com/imagegate/imagegate/test/utils/runtimeref"
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
			Spec: v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{
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
		// And by the runtime's reading: nothing admitted may be an image ID, and the pattern
		// matched the endpoint the runtime dials.
		if d.Allowed() {
			view, err := runtimeref.View(img)
			if err == nil && (view.ImageID || runtimeref.EndpointOf(ap.Host) != view.Endpoint) {
				t.Fatalf("allow %q admitted %q, which the runtime reads as %+v", allow, img, view)
			}
		}
	})
}

// FuzzFastPath checks the fast path of evaluateImage against a full evaluation of every
// covered policy, with every kind of per-image rule in play: they must find the same
// violations. A rule the fast path does not know (versionRuleHit) fails here.
func FuzzFastPath(f *testing.F) {
	f.Add("ghcr.io/acme/**", "docker.io/**", "ghcr.io/acme/legacy/*", "latest", uint8(0xff), uint8(0), "ghcr.io/acme/app")
	f.Add("nginx", "x", "y", "1.0", uint8(0x05), uint8(0x13), "nginx:1.0")
	f.Add("**", "quay.io/*", "ghcr.io/**", "v1", uint8(0x02), uint8(0x2e), "ghcr.io/a/b@"+digestA)
	f.Add("ghcr.io/**", "x", "y", "v1", uint8(0x01), uint8(0x08), "ghcr.io/acme/app:1")
	// Each rule the fast path must not clear: a deny match, an allow list missed, a denied
	// tag, a missing tag, a missing digest.
	f.Add("ghcr.io/**", "ghcr.io/acme/*", "x", "v1", uint8(0x03), uint8(0), "ghcr.io/acme/app:1")
	f.Add("quay.io/**", "x", "y", "v1", uint8(0x01), uint8(0), "ghcr.io/acme/app:1")
	f.Add("ghcr.io/**", "x", "y", "v1", uint8(0x09), uint8(0), "ghcr.io/acme/app:v1")
	f.Add("ghcr.io/**", "x", "y", "v1", uint8(0x11), uint8(0), "ghcr.io/acme/app")
	f.Add("ghcr.io/**", "x", "y", "v1", uint8(0x21), uint8(0), "ghcr.io/acme/app:1")
	f.Fuzz(func(t *testing.T, allow, deny, exempt, tag string, rules, scope uint8, img string) {
		spec := v1alpha1.ImagePolicySpec{}
		if rules&1 != 0 {
			spec.Images.Allow = []v1alpha1.ImagePattern{v1alpha1.ImagePattern(allow)}
		}
		if rules&2 != 0 {
			spec.Images.Deny = []v1alpha1.ImagePattern{v1alpha1.ImagePattern(deny)}
		}
		if rules&4 != 0 {
			spec.ExemptImages = []v1alpha1.ImagePattern{v1alpha1.ImagePattern(exempt)}
		}
		if rules&8 != 0 {
			spec.Tags.Deny = []v1alpha1.TagName{v1alpha1.TagName(tag)}
		}
		if rules&16 != 0 {
			spec.Tags.RequireTag = ptr.To(true)
		}
		spec.RequireDigest = ptr.To(rules&32 != 0)
		if rules&64 != 0 {
			spec.Mode = v1alpha1.ModeWarn
		}
		// Two policies, so that one can be satisfied while the other is not.
		other := v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/**"}}}
		if rules&128 != 0 {
			other = v1alpha1.ImagePolicySpec{Tags: v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}}}
		}
		// Where they apply: selectors, the kind of the fuzzed policy, and the subject.
		if scope&1 != 0 {
			spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
		}
		if scope&2 != 0 {
			other.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
		}
		if scope&64 != 0 {
			spec.CheckWorkloads = ptr.To(false)
		}
		cluster := []v1alpha1.ClusterImagePolicy{{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: other}}
		var namespaced []v1alpha1.ImagePolicy
		if scope&8 != 0 {
			namespaced = []v1alpha1.ImagePolicy{{ObjectMeta: metav1.ObjectMeta{Name: "fuzzed", Namespace: "a"}, Spec: spec}}
		} else {
			cluster = append(cluster, v1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "fuzzed"}, Spec: spec})
		}
		sub := &Subject{
			Namespace: "a", Workload: scope&4 != 0, NamespaceUnknown: scope&32 != 0,
			Images: []Image{{Field: "spec.containers[0].image", Ref: img}, {Field: "spec.containers[1].image", Ref: "ghcr.io/acme/app:latest"}},
		}
		if scope&16 != 0 {
			sub.PodLabels = map[string]string{"app": "web"}
		}
		if !sub.NamespaceUnknown {
			sub.NamespaceLabels = map[string]string{"kubernetes.io/metadata.name": "a", "team": "a"}
		}
		full := Compile(cluster, namespaced)
		full.fullEvaluation = true
		want := full.Evaluate(sub)
		// The fast paths: with sets of the policies a pattern satisfies, and with lists.
		for name, fast := range map[string]*Snapshot{
			"sets":  CompileWith(cluster, namespaced, Options{fastPathAlways: true}),
			"lists": CompileWith(cluster, namespaced, Options{sparseOnly: true, fastPathAlways: true}),
		} {
			got := fast.Evaluate(sub)
			if !slices.Equal(got.Messages(v1alpha1.ModeEnforce), want.Messages(v1alpha1.ModeEnforce)) ||
				!slices.Equal(got.Messages(v1alpha1.ModeWarn), want.Messages(v1alpha1.ModeWarn)) ||
				got.Covered != want.Covered {
				t.Fatalf("the fast path (%s) decides otherwise than a full evaluation:\nfast: %d covering, %v\nfull: %d covering, %v", name, got.Covered, got.Violations, want.Covered, want.Violations)
			}
		}
	})
}
