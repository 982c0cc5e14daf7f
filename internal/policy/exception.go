package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
)

// KindImagePolicyException is the kind of an exception's Ref.
const KindImagePolicyException = "ImagePolicyException"

// compiledException is an ImagePolicyException, ready to match violations.
type compiledException struct {
	ref         Ref
	reason      string
	expires     time.Time // zero: never
	podSelector labels.Selector
	images      []imageref.Pattern // nil: every image
	targets     []exceptionTarget
	ignore      []string
	// breakGlass: the exception grants break-glass for its targets and images, and exempts
	// nothing by itself.
	breakGlass bool
}

type exceptionTarget struct {
	policy Ref
	rules  []Rule // nil: every rule
}

// Exemption is a violation that an active exception lifted.
type Exemption struct {
	// Exception is the exception that lifted it.
	Exception Ref
	// Expires is when the exception ends (zero: never).
	Expires time.Time
	// Violation is what would have been reported without it.
	Violation Violation
}

// Message is the warning an admitted Pod gets for it.
func (e *Exemption) Message() string {
	until := "with no expiry"
	if !e.Expires.IsZero() {
		until = "until " + e.Expires.UTC().Format(time.RFC3339)
	}
	v := &e.Violation
	return fmt.Sprintf("%s: %s %q exempts %q from %s %q (%s) %s", v.Field, KindImagePolicyException, e.Exception.Namespace+"/"+e.Exception.Name,
		Printable(v.Image), v.Policy.Kind, v.Policy.Name, v.Rule, until)
}

// exceptionRules are the rules an exception may name (those about one image).
var exceptionRules = []Rule{RuleAllow, RuleDeny, RuleTagDeny, RuleRequireTag, RuleRequireDigest, RuleVerify}

func compileException(ex *v1alpha1.ImagePolicyException) (*compiledException, []string) {
	c := &compiledException{
		ref:    Ref{Kind: KindImagePolicyException, Namespace: ex.Namespace, Name: ex.Name},
		reason: ex.Spec.Reason, ignore: ex.Spec.Ignore,
		breakGlass: ex.Spec.AllowBreakGlass != nil && *ex.Spec.AllowBreakGlass,
	}
	var problems []string
	if strings.TrimSpace(ex.Spec.Reason) == "" {
		problems = append(problems, "spec.reason: required")
	}
	if ex.Spec.ExpiresAt != nil {
		c.expires = ex.Spec.ExpiresAt.Time
	}
	var err error
	if c.podSelector, err = selector(ex.Spec.PodSelector); err != nil {
		problems = append(problems, "spec.podSelector: "+err.Error())
	}
	for i, raw := range ex.Spec.Images {
		p, err := imageref.ParsePattern(string(raw))
		if err != nil {
			problems = append(problems, fmt.Sprintf("spec.images[%d]: invalid pattern %q: %v", i, raw, err))
			continue
		}
		c.images = append(c.images, p)
	}
	if len(ex.Spec.Policies) == 0 {
		problems = append(problems, "spec.policies: an exception names at least one policy")
	}
	for i, p := range ex.Spec.Policies {
		t := exceptionTarget{policy: Ref{Kind: p.Kind, Name: p.Name}}
		switch p.Kind {
		case KindClusterImagePolicy:
		case KindImagePolicy:
			t.policy.Namespace = ex.Namespace
		default:
			problems = append(problems, fmt.Sprintf("spec.policies[%d].kind: %q is not ClusterImagePolicy or ImagePolicy", i, p.Kind))
		}
		for _, r := range p.Rules {
			if !slices.Contains(exceptionRules, Rule(r)) {
				problems = append(problems, fmt.Sprintf("spec.policies[%d].rules: %q is not one of %v", i, r, exceptionRules))
			}
			t.rules = append(t.rules, Rule(r))
		}
		c.targets = append(c.targets, t)
	}
	return c, problems
}

// ValidateException checks an exception as imagegate's validating webhook does when it is
// created or changed: what the schema cannot say (patterns the engine cannot parse, an
// expiresAt already past at creation).
func ValidateException(ex *v1alpha1.ImagePolicyException, creating bool, now time.Time) []string {
	_, problems := compileException(ex)
	if creating && ex.Spec.ExpiresAt != nil && !ex.Spec.ExpiresAt.After(now) {
		problems = append(problems, fmt.Sprintf("spec.expiresAt: %s is not in the future: an exception that is already expired would exempt nothing",
			ex.Spec.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	return problems
}

// activeAt reports whether the exception applies at now: until its expiresAt, exclusive.
func (c *compiledException) activeAt(now time.Time) bool {
	return c.expires.IsZero() || now.Before(c.expires)
}

// selects reports whether the exception covers the subject's Pod. A selector cannot be
// evaluated without the Pod's labels (an ImageReview): it does not apply then.
func (c *compiledException) selects(sub *Subject) bool {
	if c.podSelector == nil {
		return true
	}
	if sub.PodLabelsUnknown {
		return false
	}
	return c.podSelector.Matches(labels.Set(sub.PodLabels))
}

// names reports whether the exception exempts from rule of policy. An exception with ignored
// vulnerability IDs never exempts from verify rules wholesale: it lets their scans pass
// despite those findings, and the signature and every other check still apply.
func (c *compiledException) names(policy Ref, rule Rule) bool {
	if c.breakGlass || (rule == RuleVerify && len(c.ignore) > 0) {
		return false
	}
	return c.targetsRule(policy, rule)
}

// targetsRule reports whether the exception's targets name rule of policy.
func (c *compiledException) targetsRule(policy Ref, rule Rule) bool {
	for i := range c.targets {
		t := &c.targets[i]
		if t.policy == policy && (t.rules == nil || slices.Contains(t.rules, rule)) {
			return true
		}
	}
	return false
}

// covers reports whether the exception covers the image.
func (s *Snapshot) exceptionCovers(c *compiledException, image string) bool {
	if c.images == nil {
		return true
	}
	ref, err := s.refs.Parse(image)
	if err != nil {
		return false // an image that does not parse is never exempt
	}
	for i := range c.images {
		if c.images[i].Match(&ref) {
			return true
		}
	}
	return false
}

// activeExceptions lists the exceptions of the subject's namespace that apply to its Pod now.
func (s *Snapshot) activeExceptions(sub *Subject) []*compiledException {
	all := s.exceptions[sub.Namespace]
	if len(all) == 0 {
		return nil
	}
	now := s.now()
	var out []*compiledException
	for _, c := range all {
		if c.activeAt(now) && c.selects(sub) {
			out = append(out, c)
		}
	}
	return out
}

// applyExceptions lifts the violations (and pending verifications) that an active exception
// covers, recording each as an Exemption, and attaches the exceptions' ignored vulnerability
// IDs to the verifications that remain.
func (s *Snapshot) applyExceptions(d *Decision, active []*compiledException) {
	exempting := func(policy Ref, rule Rule, image string) *compiledException {
		// Only the rules about an image: an invalid policy, an unknown namespace or an image
		// that does not parse are never exempt, whatever an exception names.
		if s.noExceptions[policy] || image == "" || !slices.Contains(exceptionRules, rule) {
			return nil
		}
		for _, c := range active {
			if c.names(policy, rule) && s.exceptionCovers(c, image) {
				return c
			}
		}
		return nil
	}
	kept := d.Violations[:0]
	lifted := false
	for _, v := range d.Violations {
		if c := exempting(v.Policy, v.Rule, v.Image); c != nil {
			d.Exempted = append(d.Exempted, Exemption{Exception: c.ref, Expires: c.expires, Violation: v})
			lifted = true
			continue
		}
		kept = append(kept, v)
	}
	d.Violations = kept
	pending := d.Pending[:0]
	for _, pv := range d.Pending {
		if c := exempting(pv.Rule.Policy, RuleVerify, pv.Image.Ref); c != nil {
			d.Exempted = append(d.Exempted, Exemption{Exception: c.ref, Expires: c.expires, Violation: Violation{
				Field: pv.Image.Field, Image: pv.Image.Ref, Container: pv.Image.Container, Normalized: pv.normalized,
				Policy: pv.Rule.Policy, policyIdx: pv.policyIdx, Mode: pv.mode, Rule: RuleVerify, Reason: "not verified: exempt",
			}})
			continue
		}
		for _, c := range active {
			if len(c.ignore) > 0 && !s.noExceptions[pv.Rule.Policy] && c.targetsRule(pv.Rule.Policy, RuleVerify) && s.exceptionCovers(c, pv.Image.Ref) {
				pv.ignores = append(pv.ignores, c)
			}
		}
		pending = append(pending, pv)
	}
	d.Pending = pending
	if lifted && len(d.Unpinned) > 0 {
		// An unpinned image stays to be pinned only while a verify violation still says so.
		unpinned := d.Unpinned[:0]
		for _, u := range d.Unpinned {
			for i := range d.Violations {
				if v := &d.Violations[i]; v.Rule == RuleVerify && v.Field == u.Image.Field {
					unpinned = append(unpinned, u)
					break
				}
			}
		}
		d.Unpinned = unpinned
	}
	if lifted {
		s.remarkFirsts(d)
	}
}

// breakGlassAllowedBy reports whether an active break-glass exception (allowBreakGlass) for
// the subject names the violation's policy and rule and covers its image, which a policy with
// breakGlassRequiresException needs before break-glass applies to the violation. An
// exception that only ignores findings or exempts rules never unlocks it.
func (s *Snapshot) breakGlassAllowedBy(active []*compiledException, v *Violation) bool {
	if v.Image == "" {
		return false
	}
	for _, c := range active {
		if c.breakGlass && c.targetsRule(v.Policy, v.Rule) && s.exceptionCovers(c, v.Image) {
			return true
		}
	}
	return false
}

// ExceptionError is why an exception could not be compiled ("" when it could); such an
// exception exempts nothing.
func (s *Snapshot) ExceptionError(ref Ref) string { return s.exceptionErrors[ref] }

// ExceptionForbidden lists the policies an exception names that set allowExceptions: false.
func (s *Snapshot) ExceptionForbidden(ref Ref) []Ref {
	return s.exceptionTargets(ref, func(p Ref) bool { return s.noExceptions[p] })
}

// ExceptionMissing lists the policies an exception names that do not exist (yet): it
// exempts nothing from them until they do.
func (s *Snapshot) ExceptionMissing(ref Ref) []Ref {
	return s.exceptionTargets(ref, func(p Ref) bool { _, ok := s.uids[p]; return !ok })
}

// ExceptionBreakGlassUnused lists, for an exception that sets allowBreakGlass, the existing
// policies it names whose break-glass needs no exception (they do not set allowBreakGlass
// with breakGlassRequiresException): its grant changes nothing for them.
func (s *Snapshot) ExceptionBreakGlassUnused(ref Ref) []Ref {
	for _, c := range s.exceptions[ref.Namespace] {
		if c.ref == ref && !c.breakGlass {
			return nil
		}
	}
	return s.exceptionTargets(ref, func(p Ref) bool {
		_, exists := s.uids[p]
		return exists && !s.glassNeedsException[p]
	})
}

// exceptionTargets lists the policies a valid exception names that match.
func (s *Snapshot) exceptionTargets(ref Ref, match func(Ref) bool) []Ref {
	for _, c := range s.exceptions[ref.Namespace] {
		if c.ref != ref {
			continue
		}
		var out []Ref
		for _, t := range c.targets {
			if match(t.policy) {
				out = append(out, t.policy)
			}
		}
		return out
	}
	return nil
}

// AnnotationExceptions is the audit annotation that lists the exceptions that lifted
// violations of a request (namespace/name, sorted).
const AnnotationExceptions = "exceptions"

// ExemptionMessages are the warnings of the exemptions, each once, capped at MaxMessages and
// a count of the rest, as violation messages are.
func (d *Decision) ExemptionMessages() []string {
	var out []string
	for i := range d.Exempted {
		if m := d.Exempted[i].Message(); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) > MaxMessages {
		more := len(out) - MaxMessages
		out = append(out[:MaxMessages], fmt.Sprintf("... and %d more exemptions (the audit annotation %q names every exception)", more, AnnotationExceptions))
	}
	return out
}

// NoteMessages are the decision's notes as warnings, once each, at most MaxMessages.
func (d *Decision) NoteMessages() []string {
	var out []string
	for _, n := range d.Notes {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) > MaxMessages {
		more := len(out) - MaxMessages
		out = append(out[:MaxMessages], fmt.Sprintf("... and %d more notes", more))
	}
	return out
}

// ExceptionNames lists the exceptions a decision relied on, once each, sorted.
func (d *Decision) ExceptionNames() []string {
	var out []string
	for i := range d.Exempted {
		r := d.Exempted[i].Exception
		out = append(out, r.Namespace+"/"+r.Name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ExceptionRefs lists every exception of the snapshot, valid or not.
func (s *Snapshot) ExceptionRefs() []Ref {
	var out []Ref
	for _, list := range s.exceptions {
		for _, c := range list {
			out = append(out, c.ref)
		}
	}
	for r := range s.exceptionErrors {
		out = append(out, r)
	}
	return out
}
