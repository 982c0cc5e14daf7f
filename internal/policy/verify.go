package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/attest"
	"github.com/imagegate/imagegate/internal/imageref"
)

// RuleVerify is the rule broken by an image that its verify section could not verify.
const RuleVerify Rule = "verify"

// ReasonUnpinned is why an image covered by a verify rule is refused when it is named by tag:
// what is verified is a digest, and only a pinned reference runs the verified bytes.
const ReasonUnpinned = "it is not pinned by digest, and verify rules check digests: imagegate's mutating webhook pins the tags of the Pods it verifies (it did not run for this request); name the image by digest (@sha256:...)"

// Trust is what the verifier checks signatures with (internal/verify's *Trust): keys parsed,
// the trusted root read from its ConfigMap, registry credentials.
type Trust interface {
	// Version changes whenever the material changes, so that results cached under the
	// rule's key are checked again.
	Version() string
}

// TrustCompiler turns a verify section into its Trust. An error makes the policy invalid: it
// refuses every Pod it covers, with the error as the reason, until fixed.
type TrustCompiler func(ref Ref, rules *v1alpha1.VerifyRules) (Trust, error)

// Options tune Compile.
type Options struct {
	// Trust compiles verify sections. Nil: verify sections compile without trust material
	// (Trust is nil), for callers that never verify (the CLI's --offline).
	Trust TrustCompiler
	// Exceptions are the ImagePolicyExceptions in force (those that do not compile exempt
	// nothing; ExceptionError says why).
	Exceptions []v1alpha1.ImagePolicyException
	// Now is the clock exceptions expire by; nil: time.Now.
	Now func() time.Time
	// AsWritten compiles each policy in the mode its spec writes, even one that waits for a
	// clean audit before it refuses (what the policy change preflight asks about).
	AsWritten bool
	// sparseOnly makes the fast path use lists, never sets, of the policies a pattern
	// satisfies, so that tests reach both.
	sparseOnly bool
	// fastPathAlways tries the fast path whatever the snapshot's size, for tests.
	fastPathAlways bool
}

// VerifyResult is what checking one pending verification found.
type VerifyResult struct {
	// Reason is why it failed ("" when verified).
	Reason string
	// Findings, when set, are the vulnerability IDs that failed it and the only reason it
	// failed: an exception that ignores every one of them lets it pass.
	Findings []string
	// Notes are what an admission should still say about a verified image (the findings
	// VEX ruled out, with the statements that did); only when Reason is "".
	Notes []string
}

// VerifyRule is a policy's verify section, compiled. It is shared, read-only.
type VerifyRule struct {
	// Policy is the policy the rule belongs to.
	Policy Ref
	// Key changes whenever the policy's verify section or its trust material changes: a
	// result cached under it stays true until then.
	Key string
	// Spec is the verify section as written.
	Spec *v1alpha1.VerifyRules
	// Trust is what Options.Trust compiled; nil without one.
	Trust Trust

	images []imageref.Pattern // nil: every image the policy checks
}

// Verification is one image that a verify rule covers and that must be checked in its
// registry, at its digest, before the decision is final (see Snapshot.Settle).
type Verification struct {
	// Image is the image as the Pod writes it.
	Image Image
	// Repository is the image's repository (canonical host and path).
	Repository string
	// Digest is the digest the Pod runs.
	Digest string
	// Rule is the verify rule to check it against.
	Rule *VerifyRule

	normalized string
	mode       v1alpha1.PolicyMode
	policyIdx  int32
	// ignores are the active exceptions whose ignored vulnerability IDs apply to it.
	ignores []*compiledException
}

// Unpinned is an image named by tag that a verify rule covers: the mutating webhook pins it.
type Unpinned struct {
	// Image is the image as the Pod writes it.
	Image Image
	// Repository is its repository (canonical host and path), Tag the tag it runs (latest
	// when none is written).
	Repository, Tag string
	// Rule is a verify rule that covers it (its pull secrets reach the registry).
	Rule *VerifyRule
	// Enforce says an Enforce policy covers it, so an image that cannot be resolved must be
	// refused.
	Enforce bool
	// RequireDigest says a covering policy requires digests: such an image must be pinned by
	// whoever writes the Pod, never by imagegate.
	RequireDigest bool
}

func compileVerify(ref Ref, uid types.UID, spec *v1alpha1.VerifyRules, opts *Options) (*VerifyRule, []string) {
	r := &VerifyRule{Policy: ref, Spec: spec}
	var problems []string
	for i, raw := range spec.Images {
		p, err := imageref.ParsePattern(string(raw))
		if err != nil {
			problems = append(problems, fmt.Sprintf("spec.verify.images[%d]: invalid pattern %q: %v", i, raw, err))
			continue
		}
		if p.Tag != "" || p.Digest != "" {
			problems = append(problems, fmt.Sprintf("spec.verify.images[%d]: %q names a tag or digest; verify.images names repositories (a tag pattern would stop matching once the image is pinned to its digest)", i, raw))
			continue
		}
		r.images = append(r.images, p)
	}
	if len(spec.Signers) == 0 {
		problems = append(problems, "spec.verify.signers: at least one signer is required")
	}
	names := make([]string, len(spec.Signers))
	for i := range spec.Signers {
		names[i] = spec.Signers[i].Name
		for j, id := range spec.Signers[i].Certificate.Identities {
			if _, err := regexp.Compile(id.SubjectRegExp); id.SubjectRegExp != "" && err != nil {
				problems = append(problems, fmt.Sprintf("spec.verify.signers[%d] %q: certificate.identities[%d]: invalid regular expression %q: %v", i, names[i], j, id.SubjectRegExp, err))
			}
		}
		for j, id := range spec.Signers[i].Keyless.Identities {
			for _, re := range []string{id.IssuerRegExp, id.SubjectRegExp} {
				if _, err := regexp.Compile(re); re != "" && err != nil {
					problems = append(problems, fmt.Sprintf("spec.verify.signers[%d] %q: identities[%d]: invalid regular expression %q: %v", i, names[i], j, re, err))
				}
			}
		}
	}
	for i := range spec.Attestations {
		if _, err := attest.Compile(&spec.Attestations[i], names); err != nil {
			problems = append(problems, fmt.Sprintf("spec.verify.attestations[%d]: %v", i, err))
		}
	}
	if ref.Kind == KindImagePolicy {
		if len(spec.PullSecrets) > 0 {
			problems = append(problems, "spec.verify.pullSecrets: an ImagePolicy cannot use Secrets of imagegate's namespace")
		}
		if len(spec.CloudCredentials) > 0 {
			problems = append(problems, "spec.verify.cloudCredentials: an ImagePolicy cannot use the manager's cloud identities")
		}
		if len(spec.TUFRoots) > 0 {
			problems = append(problems, "spec.verify.tufRoots: an ImagePolicy cannot use tufRoots, which make the manager fetch from the repositories they name; use trustedRoot")
		}
		for i := range spec.Signers {
			if spec.Signers[i].Key.SecretRef.Name != "" {
				problems = append(problems, fmt.Sprintf("spec.verify.signers[%d].key.secretRef: an ImagePolicy cannot use Secrets of imagegate's namespace; write publicKey inline", i))
			}
			if spec.Signers[i].Key.KMS != "" {
				problems = append(problems, fmt.Sprintf("spec.verify.signers[%d].key.kms: an ImagePolicy cannot use KMS keys, which the manager reads with its own cloud identity; write publicKey inline", i))
			}
		}
	}
	version := ""
	if len(problems) == 0 && opts.Trust != nil {
		trust, err := opts.Trust(ref, spec)
		if err != nil {
			problems = append(problems, "spec.verify: "+err.Error())
		} else {
			r.Trust, version = trust, trust.Version()
		}
	}
	// The verify section's content, not the policy's generation: an edit elsewhere in the
	// spec (its mode, its allow list) keeps every result verified under the same rule, and
	// the policy change preflight finds what the audit verified.
	content, _ := json.Marshal(spec)
	sum := sha256.Sum256(content)
	r.Key = string(uid) + "/" + hex.EncodeToString(sum[:12]) + "/" + version
	return r, problems
}

// covers reports whether the rule applies to the image (its repository: a pinned image must
// stay covered).
func (r *VerifyRule) covers(ref *imageref.Reference) bool {
	if r.images == nil {
		return true
	}
	for i := range r.images {
		p := &r.images[i]
		if p.Host == ref.Host && imageref.MatchSegments(p.Segments, ref.Path) {
			return true
		}
	}
	return false
}

// collectVerify adds, for each covered policy with a verify rule that applies to the image
// (and does not exempt it), a pending Verification when the image is pinned by digest, and a
// violation (with an Unpinned entry for the mutating webhook) when it is not. A workload's
// pod template is not verified: its Pods are, when they are created.
func (s *Snapshot) collectVerify(img *Image, ref *imageref.Reference, sc *scratch, d *Decision) {
	first := len(d.Unpinned)
	for _, idx := range s.verifying {
		if sc.coveredAt[idx] != sc.evalGen {
			continue
		}
		p := &s.policies[idx]
		if m := &sc.marks[idx]; m.gen == sc.gen && m.exempt {
			continue
		}
		if !p.verify.covers(ref) {
			continue
		}
		if sc.workload {
			d.VerifyDeferred = true
			continue
		}
		repo := ref.Repository()
		digest := ref.Digest
		if img.Running != "" {
			if digest != "" && digest != img.Running {
				d.add(img, ref, p, RuleVerify, "it runs "+img.Running+", not the digest its spec names")
				continue
			}
			digest = img.Running
		}
		if digest == "" {
			d.add(img, ref, p, RuleVerify, ReasonUnpinned)
			if len(d.Unpinned) == first {
				d.Unpinned = append(d.Unpinned, Unpinned{Image: *img, Repository: repo, Tag: ref.EffectiveTag(), Rule: p.verify})
			}
			u := &d.Unpinned[len(d.Unpinned)-1]
			u.Enforce = u.Enforce || p.mode == v1alpha1.ModeEnforce
			continue
		}
		d.Pending = append(d.Pending, Verification{
			Image: *img, Repository: repo, Digest: digest, Rule: p.verify,
			normalized: ref.Normalized, mode: p.mode, policyIdx: p.idx,
		})
	}
	if len(d.Unpinned) > first {
		// A policy that requires digests wants them written: pinning would satisfy it for
		// the writer.
		u := &d.Unpinned[first]
		for _, idx := range s.requireDigest {
			if sc.coveredAt[idx] == sc.evalGen {
				if m := &sc.marks[idx]; m.gen != sc.gen || !m.exempt {
					u.RequireDigest = true
					break
				}
			}
		}
	}
}

// Settle completes a decision once its pending verifications are done: results[i] is what
// checking d.Pending[i] found. Each failure becomes a violation of its policy, in that
// policy's mode, unless an active exception ignores every vulnerability that failed it; and
// break-glass applies to it as to any other.
func (s *Snapshot) Settle(sub *Subject, d *Decision, results []VerifyResult) {
	added := false
	for i, r := range results {
		if i >= len(d.Pending) {
			continue
		}
		v := &d.Pending[i]
		if r.Reason == "" {
			for _, n := range r.Notes {
				d.Notes = append(d.Notes, fmt.Sprintf("%s: image %q is admitted by %s %q: %s", v.Image.Field, Printable(v.Image.Ref), v.Rule.Policy.Kind, v.Rule.Policy.Name, Printable(n)))
			}
			continue
		}
		viol := Violation{
			Field: v.Image.Field, Image: v.Image.Ref, Container: v.Image.Container, Normalized: v.normalized,
			Policy: v.Rule.Policy, policyIdx: v.policyIdx, Mode: v.mode, Rule: RuleVerify, Reason: r.Reason,
		}
		if c := ignoredBy(v.ignores, r.Findings); c != nil {
			d.Exempted = append(d.Exempted, Exemption{Exception: c.ref, Expires: c.expires, Violation: viol})
			continue
		}
		d.Violations = append(d.Violations, viol)
		added = true
	}
	if !added {
		return
	}
	s.remarkFirsts(d)
	if sub.BreakGlass && len(s.breakGlass) > 0 {
		s.applyBreakGlass(d, s.activeExceptions(sub))
	}
}

// ignoredBy returns the exception (the first, when several share the work) under whose
// ignores every finding falls, or nil.
func ignoredBy(exceptions []*compiledException, findings []string) *compiledException {
	if len(findings) == 0 || len(exceptions) == 0 {
		return nil
	}
	var first *compiledException
	for _, f := range findings {
		found := false
		for _, c := range exceptions {
			if slices.Contains(c.ignore, f) {
				found = true
				if first == nil {
					first = c
				}
				break
			}
		}
		if !found {
			return nil
		}
	}
	return first
}

// remarkFirsts flags again the first violation of each policy, after violations were added
// to or removed from a decision.
func (s *Snapshot) remarkFirsts(d *Decision) {
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	for i := range d.Violations {
		d.Violations[i].first = false
	}
	markFirsts(d, sc)
}

// SkipVerify removes what verify rules found from d (their violations, pending verifications
// and unpinned images), for a caller that cannot reach registries and says so (the CLI's
// --offline). It returns the images that were not verified, each once.
func (s *Snapshot) SkipVerify(d *Decision) []Image {
	var skipped []Image
	seen := map[string]bool{}
	note := func(img Image) {
		if !seen[img.Field] {
			seen[img.Field] = true
			skipped = append(skipped, img)
		}
	}
	for i := range d.Pending {
		note(d.Pending[i].Image)
	}
	for i := range d.Unpinned {
		note(d.Unpinned[i].Image)
	}
	kept := d.Violations[:0]
	for _, v := range d.Violations {
		if v.Rule != RuleVerify {
			kept = append(kept, v)
		}
	}
	d.Violations, d.Pending, d.Unpinned = kept, nil, nil
	s.remarkFirsts(d)
	return skipped
}

// ToPin lists the unpinned images that a pinning adapter (the mutating webhook, the CLI)
// rewrites to their digests: not those a policy requiring digests covers (the writer must
// pin them), and only images the request sets (all of a CREATE's, the new or changed ones of
// an UPDATE): rewriting an image the UPDATE left alone would restart the running container.
func (d *Decision) ToPin(sub *Subject) []*Unpinned {
	var out []*Unpinned
	for i := range d.Unpinned {
		u := &d.Unpinned[i]
		if !u.RequireDigest && sets(sub, u.Image.Field) {
			out = append(out, u)
		}
	}
	return out
}

func sets(sub *Subject, field string) bool {
	for i := range sub.Images {
		if sub.Images[i].Field == field {
			return true
		}
	}
	return false
}

// Pinned is the image as written with the digest its tag names added: what the runtime pulls
// (the digest decides) and what the validating webhook verifies.
func (u *Unpinned) Pinned(digest string) string { return u.Image.Ref + "@" + digest }
