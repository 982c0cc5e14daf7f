package policy

import (
	"strings"
	"testing"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

const vDigest = "@sha256:" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

const keySigner = `{signers: [{name: release, key: {publicKey: "k"}}], transparencyLog: Skip}`

// What verify rules cover, and what they leave pending for the registry: the engine decides
// which images need a registry call, never makes one.
func TestVerifyCoverage(t *testing.T) {
	for _, c := range []struct {
		name     string
		docs     []string
		sub      Subject
		pending  []string // fields verified at their digest
		unpinned []string // fields refused until pinned
		deferred bool
		pinnable bool // the unpinned image may be pinned (no requireDigest)
		refused  bool // a name rule refuses it in Enforce, whatever is verified
	}{
		{
			name:    "a digest is verified",
			docs:    []string{cluster("v", `{verify: `+keySigner+`}`)},
			sub:     Subject{Namespace: "a", Images: containers("ghcr.io/acme/app" + vDigest)},
			pending: []string{"spec.containers[0].image"},
		},
		{
			name:     "a tag is refused until pinned, and may be pinned",
			docs:     []string{cluster("v", `{verify: `+keySigner+`}`)},
			sub:      Subject{Namespace: "a", Images: containers("ghcr.io/acme/app:1.4")},
			unpinned: []string{"spec.containers[0].image"}, pinnable: true,
		},
		{
			// Refused by requireDigest in Enforce whatever its registry says: neither pinned
			// nor looked up.
			name:    "requireDigest: never pinned by imagegate",
			docs:    []string{cluster("v", `{verify: `+keySigner+`}`), cluster("d", `{requireDigest: true}`)},
			sub:     Subject{Namespace: "a", Images: containers("ghcr.io/acme/app:1.4")},
			refused: true,
		},
		{
			name:     "requireDigest in Warn: pinned by the writer, still verified",
			docs:     []string{cluster("v", `{verify: `+keySigner+`}`), cluster("d", `{mode: Warn, requireDigest: true}`)},
			sub:      Subject{Namespace: "a", Images: containers("ghcr.io/acme/app:1.4")},
			unpinned: []string{"spec.containers[0].image"},
		},
		{
			// No registry work for an image a name rule refuses: the host it names never
			// decides where imagegate connects.
			name:    "refused by a name rule: not verified",
			docs:    []string{cluster("v", `{verify: `+keySigner+`}`), cluster("names", `{images: {allow: ["ghcr.io/acme/**"]}}`)},
			sub:     Subject{Namespace: "a", Images: containers("attacker.example/x/y"+vDigest, "evil.example/app:1", "ghcr.io/acme/app"+vDigest)},
			pending: []string{"spec.containers[2].image"},
			refused: true,
		},
		{
			name: "verify.images limits the rule to repositories",
			docs: []string{cluster("v", `{verify: {images: ["ghcr.io/acme/**"], signers: [{name: release, key: {publicKey: "k"}}], transparencyLog: Skip}}`)},
			sub:  Subject{Namespace: "a", Images: containers("docker.io/library/nginx"+vDigest, "ghcr.io/acme/app"+vDigest)},
			// Only the second.
			pending: []string{"spec.containers[1].image"},
		},
		{
			name:    "a pinned tag stays covered by verify.images",
			docs:    []string{cluster("v", `{verify: {images: ["ghcr.io/acme/app"], signers: [{name: release, key: {publicKey: "k"}}], transparencyLog: Skip}}`)},
			sub:     Subject{Namespace: "a", Images: containers("ghcr.io/acme/app:1.4" + vDigest)},
			pending: []string{"spec.containers[0].image"},
		},
		{
			name: "exemptImages are not verified",
			docs: []string{cluster("v", `{exemptImages: ["ghcr.io/vendor/**"], verify: `+keySigner+`}`)},
			sub:  Subject{Namespace: "a", Images: containers("ghcr.io/vendor/x:1")},
		},
		{
			name:     "a pod template is verified when its Pods are",
			docs:     []string{cluster("v", `{verify: `+keySigner+`}`)},
			sub:      Subject{Namespace: "a", Workload: true, Images: containers("ghcr.io/acme/app:1.4")},
			deferred: true,
		},
		{
			name:     "the CLI verifies pod templates",
			docs:     []string{cluster("v", `{verify: `+keySigner+`}`)},
			sub:      Subject{Namespace: "a", Workload: true, VerifyTemplates: true, Images: containers("ghcr.io/acme/app:1.4")},
			unpinned: []string{"spec.containers[0].image"}, pinnable: true,
		},
		{
			name:    "each policy verifies on its own",
			docs:    []string{cluster("v1", `{verify: `+keySigner+`}`), cluster("v2", `{verify: `+keySigner+`}`)},
			sub:     Subject{Namespace: "a", Images: containers("ghcr.io/acme/app" + vDigest)},
			pending: []string{"spec.containers[0].image", "spec.containers[0].image"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cps, nps := policies(t, c.docs...)
			snap := Compile(cps, nps)
			for _, r := range snap.Refs() {
				if e := snap.PolicyError(r); e != "" {
					t.Fatalf("%s: %s", r, e)
				}
			}
			if !snap.Verifies() {
				t.Fatal("Verifies() is false with a verify rule")
			}
			d := snap.Evaluate(&c.sub)
			var pending, unpinned []string
			for _, p := range d.Pending {
				pending = append(pending, p.Image.Field)
				if !strings.HasPrefix(p.Digest, "sha256:") {
					t.Errorf("pending digest %q", p.Digest)
				}
			}
			for _, u := range d.Unpinned {
				unpinned = append(unpinned, u.Image.Field)
				if u.RequireDigest == c.pinnable {
					t.Errorf("RequireDigest = %v, want %v", u.RequireDigest, !c.pinnable)
				}
				if !u.Enforce {
					t.Error("an Enforce policy covers it, but Enforce is false")
				}
			}
			if strings.Join(pending, ",") != strings.Join(c.pending, ",") || strings.Join(unpinned, ",") != strings.Join(c.unpinned, ",") {
				t.Errorf("pending %v unpinned %v; want %v and %v", pending, unpinned, c.pending, c.unpinned)
			}
			if d.VerifyDeferred != c.deferred {
				t.Errorf("VerifyDeferred = %v, want %v", d.VerifyDeferred, c.deferred)
			}
			if len(c.unpinned) > 0 && d.Allowed() {
				t.Error("an unpinned image under a verify rule was admitted")
			}
			if len(c.unpinned) == 0 && !c.refused && !d.Allowed() {
				t.Errorf("refused before any verification: %v", lines(&d))
			}
			if c.refused && d.Allowed() {
				t.Error("admitted, want refused by a name rule")
			}
		})
	}
}

// Settle turns verification failures into violations in the policy's mode, counted once per
// policy, and break-glass applies to them as to name rules.
func TestSettle(t *testing.T) {
	cps, nps := policies(t,
		cluster("enforce", `{allowBreakGlass: true, verify: `+keySigner+`}`),
		cluster("warn", `{mode: Warn, verify: `+keySigner+`}`))
	snap := Compile(cps, nps)
	sub := Subject{Namespace: "a", Images: containers("ghcr.io/acme/app"+vDigest, "ghcr.io/acme/tool"+vDigest)}
	d := snap.Evaluate(&sub)
	if len(d.Pending) != 4 {
		t.Fatalf("%d pending, want 4", len(d.Pending))
	}
	// Pending is by image, then by policy: enforce and warn for each image.
	failures := []VerifyResult{{Reason: "no signature"}, {Reason: "no signature"}, {}, {Reason: "no signature"}}
	snap.Settle(&sub, &d, failures)
	if d.Allowed() {
		t.Fatal("a failed verification of an Enforce policy admitted")
	}
	if got := d.AuditAnnotations()[AnnotationPolicies]; got != "Enforce:ClusterImagePolicy/enforce,Warn:ClusterImagePolicy/warn" {
		t.Errorf("policies annotation %q", got)
	}
	if len(d.Messages(v1alpha1.ModeWarn)) != 2 {
		t.Errorf("warn messages: %v", d.Messages(v1alpha1.ModeWarn))
	}

	glass := sub
	glass.BreakGlass = true
	d = snap.Evaluate(&glass)
	snap.Settle(&glass, &d, failures)
	if !d.Allowed() || d.Outcome() != DecisionAllowedByBreakGlass {
		t.Errorf("break-glass did not apply to a verify violation: %v", lines(&d))
	}
}

func TestVerifyCompileErrors(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{cluster("v", `{verify: {images: ["ghcr.io/acme/app:1.4"], signers: [{name: r, key: {publicKey: k}}], transparencyLog: Skip}}`), "verify.images names repositories"},
		{namespaced("a", "v", `{verify: {signers: [{name: r, key: {secretRef: {name: s}}}], transparencyLog: Skip}}`), "an ImagePolicy cannot use Secrets"},
		{namespaced("a", "v", `{verify: {pullSecrets: [creds], signers: [{name: r, key: {publicKey: k}}], transparencyLog: Skip}}`), "an ImagePolicy cannot use Secrets"},
	} {
		cps, nps := policies(t, c.doc)
		snap := Compile(cps, nps)
		got := snap.PolicyError(snap.Refs()[0])
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: PolicyError %q, want %q", c.doc, got, c.want)
		}
	}
}
