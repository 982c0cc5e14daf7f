package vap

import (
	"fmt"
	"regexp"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// The fast path's own oracle, in Go (CEL's matches is Go's regexp): whenever a policy's proof
// holds for an image, the engine finds no name-rule violation of that policy in it, or the
// image is one the generated policies leave to the webhook (not plain). TestDifferential and
// FuzzDifferential hold the whole validation (proof, then full path) to the engine as well;
// this checks the proof alone, on far more policies than the apiserver's CEL could run.

// fastPatterns are pattern shapes the proof spells in its own way: Docker Hub's with and
// without library/, globs, ports, dotless hosts, localhost, tags and digests.
var fastPatterns = []string{
	"ghcr.io/acme/**", "ghcr.io/acme/*", "ghcr.io/acme/app", "ghcr.io/acme/app:1.0", "ghcr.io/acme/web-*", "ghcr.io/*/app",
	"ghcr.io/acme/legacy@sha256:" + fmt.Sprintf("%064x", 10), "ghcr.io:443/acme/**", "registry.corp:5000/**", "registry.corp:5000/team/*",
	"localhost/app", "localhost:5000/**", "registry:443/app", "myhost:443/**", "10.0.0.1/app", "[::1]:5000/app",
	"docker.io/**", "**", "nginx", "nginx:1.25", "nginx:latest", "library/*", "docker.io/library/**", "docker.io/bitnami/**",
	"index.docker.io/acme/app", "docker.io/*/nginx", "docker.io/library/ng*", "docker.io/foo.bar/app", "docker.io/localhost/app",
	"docker.io/library/**/x", "sha256x/app", "blake3:5000/app",
}

// prover is one policy's proof, in Go; nil expressions when it has none.
type prover struct {
	snap    *policy.Snapshot
	rules   *policy.NameRules
	ok, bad *regexp.Regexp
}

// newProver compiles the policy; nil for an invalid one (kept in the webhook).
func newProver(spec v1alpha1.ImagePolicySpec) *prover {
	snap := policy.Compile([]v1alpha1.ClusterImagePolicy{cluster("p", spec)}, nil)
	rules := snap.NameRules(fixedNow)
	if len(rules) != 1 || rules[0].Webhook != "" {
		return nil
	}
	pr := &prover{snap: snap, rules: &rules[0]}
	if ok, bad := fastRegexes(pr.rules); ok != "" {
		pr.ok = regexp.MustCompile(ok)
		if bad != "" {
			pr.bad = regexp.MustCompile(bad)
		}
	}
	return pr
}

// holds is the proof for one image.
func (pr *prover) holds(img string) bool {
	return pr.ok != nil && (pr.bad == nil || !pr.bad.MatchString(img)) && pr.ok.MatchString(img)
}

// checkProof fails when the proof holds for img but the engine refuses it by name.
func checkProof(t *testing.T, spec v1alpha1.ImagePolicySpec, pr *prover, img string) {
	t.Helper()
	if pr == nil || !pr.holds(img) {
		return
	}
	if k := goKind(img); k != "p" {
		if k == "id" {
			t.Fatalf("policy %+v: the proof holds for the image ID %q, which every policy refuses", spec, img)
		}
		return
	}
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: img}}}}
	sub := policy.Subject{Namespace: "ns", Images: podspec.PodImages(&p.Spec, "spec")}
	for _, v := range pr.snap.Evaluate(&sub).Violations {
		if v.Rule != policy.RuleVerify {
			t.Fatalf("policy %+v: the proof holds for %q, which the engine refuses: %s", spec, img, v.Message())
		}
	}
}

// proofSpecs are the policies of one pattern the oracle tries: allowed, denied, exempt, with
// the tag and digest rules.
func proofSpecs(pattern, other, tag string, flags uint8) v1alpha1.ImagePolicySpec {
	var spec v1alpha1.ImagePolicySpec
	switch flags & 3 {
	case 0:
		spec.Images.Allow = patterns(pattern)
	case 1:
		spec.Images.Deny = patterns(pattern)
	case 2:
		spec.Images.Allow = patterns(pattern, other)
		spec.Images.Deny = patterns(other)
	default:
		spec.Images.Allow = patterns(other)
		spec.Images.Deny = patterns(pattern)
	}
	if tag != "" {
		spec.Tags.Deny = tags(tag)
	}
	spec.Tags.RequireTag = ptr.To(flags&4 != 0)
	spec.RequireDigest = ptr.To(flags&8 != 0)
	return spec
}

func TestFastProofSound(t *testing.T) {
	imgs := images(t)
	for _, p := range fastPatterns {
		for _, other := range []string{"ghcr.io/acme/**", "docker.io/library/*", "nginx:1.25"} {
			for _, tag := range []string{"", "latest", "dev", "1.0"} {
				for flags := range uint8(16) {
					spec := proofSpecs(p, other, tag, flags)
					pr := newProver(spec)
					for _, img := range imgs {
						checkProof(t, spec, pr, img)
					}
				}
			}
		}
	}
}

func FuzzFastProof(f *testing.F) {
	for i, s := range images(f) {
		f.Add(s, fastPatterns[i%len(fastPatterns)], "ghcr.io/acme/**", "latest", uint8(i))
	}
	f.Fuzz(func(t *testing.T, img, pattern, other, tag string, flags uint8) {
		if len(img)+len(pattern)+len(other)+len(tag) > 1000 {
			return
		}
		spec := proofSpecs(pattern, other, tag, flags)
		checkProof(t, spec, newProver(spec), img)
	})
}

// TestFastProofTaken: the proof holds where it should, so that a broken proof that never
// holds (every Pod normalized again) fails a test rather than only a benchmark.
func TestFastProofTaken(t *testing.T) {
	digest := "@sha256:" + fmt.Sprintf("%064x", 7)
	for _, c := range []struct {
		spec   v1alpha1.ImagePolicySpec
		images []string
	}{
		{v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: patterns("ghcr.io/acme/**", "registry.corp:5000/**")}, Tags: v1alpha1.TagRules{Deny: tags("latest")}},
			[]string{"ghcr.io/acme/web:1.4.2", "ghcr.io:443/acme/envoy:1.31", "registry.corp:5000/tools/agent:2", "ghcr.io/acme/app" + digest}},
		{v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: patterns("docker.io/library/*", "docker.io/bitnami/**"), Deny: patterns("nginx:1.25")}},
			[]string{"nginx", "nginx:1.27", "library/redis:7", "docker.io/nginx:1", "index.docker.io/library/nginx:1.27", "bitnami/redis:7", "docker.io:443/bitnami/kafka/x:1"}},
		{v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Deny: patterns("docker.io/**")}, RequireDigest: ptr.To(true)},
			[]string{"ghcr.io/acme/app" + digest, "localhost:5000/app:1" + digest}},
		{v1alpha1.ImagePolicySpec{Tags: v1alpha1.TagRules{Deny: tags("dev"), RequireTag: ptr.To(true)}},
			[]string{"nginx:1", "ghcr.io/acme/app:1.0", "a/b" + digest}},
	} {
		pr := newProver(c.spec)
		for _, img := range c.images {
			if !pr.holds(img) {
				ok, bad := fastRegexes(pr.rules)
				t.Errorf("policy %+v: no proof for %q, which it allows (OK %s, BAD %s)", c.spec, img, ok, bad)
			}
		}
	}
}
