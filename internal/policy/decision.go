package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
)

// Rule names the rule that a violation breaks, as the policy spells it.
type Rule string

// The rules.
const (
	RuleAllow         Rule = "images.allow"
	RuleDeny          Rule = "images.deny"
	RuleTagDeny       Rule = "tags.deny"
	RuleRequireTag    Rule = "tags.requireTag"
	RuleRequireDigest Rule = "requireDigest"
	RuleReference     Rule = "reference"
	RuleNamespace     Rule = "namespaceSelector"
	RuleInvalidPolicy Rule = "policy"
)

// Violation is one broken rule: one image against one rule of one policy.
type Violation struct {
	// Field is the field path of the image (or of what the violation is about).
	Field string
	// Image is the image as written, "" for a violation that is not about one image.
	Image string
	// Container is the name of the image's container (or image volume).
	Container string
	// Normalized is the fully qualified image, "" when it does not parse.
	Normalized string
	// Policy is the policy that the image breaks.
	Policy Ref
	// Mode is that policy's mode.
	Mode v1alpha1.PolicyMode
	// Rule is the broken rule.
	Rule Rule
	// Reason says how the rule is broken, in words.
	Reason string
	// BreakGlass says the violation would have denied, and was admitted by break-glass; its
	// Mode is then Warn.
	BreakGlass bool

	policyIdx int32 // the policy's position in the snapshot
	first     bool  // the first violation of its policy in the decision
}

// Message is the line a user reads, for example:
//
//	spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow
func (v *Violation) Message() string {
	var b strings.Builder
	b.WriteString(v.Field)
	b.WriteString(": ")
	switch {
	case v.Image == "" && v.Rule != RuleReference:
		b.WriteString("the Pod")
	case v.Normalized == "" || v.Normalized == v.Image:
		// Unparsable, or written in full: the normalized form would say it twice.
		fmt.Fprintf(&b, "image %q", v.Image)
	default:
		fmt.Fprintf(&b, "image %q (%s)", v.Image, v.Normalized)
	}
	fmt.Fprintf(&b, " is not allowed by %s %q: %s", v.Policy.Kind, v.Policy.Name, Printable(v.Reason))
	if v.BreakGlass {
		b.WriteString("; admitted by break-glass")
	}
	return b.String()
}

// Decision is the outcome of Evaluate: every violation of every policy that covers the
// subject. The subject is admitted when no Enforce violation is among them.
type Decision struct {
	Violations []Violation
	// Covered is the number of policies that cover the subject.
	Covered int
	// Pending are the images that verify rules must check in their registries before the
	// decision is final: the caller verifies them and calls Snapshot.Settle.
	Pending []Verification
	// Unpinned are the images named by tag that verify rules cover (each also has a
	// RuleVerify violation): the mutating webhook pins them to their digests.
	Unpinned []Unpinned
	// VerifyDeferred says verify rules cover images of a pod template, which are verified
	// when its Pods are created, not now.
	VerifyDeferred bool
	// Exempted are the violations that active ImagePolicyExceptions lifted.
	Exempted []Exemption
	// Notes are what verify rules found worth saying about images they admitted (the
	// findings VEX ruled out): warnings, not violations.
	Notes []string
}

// FirstOfPolicy reports whether violation i is the first of its policy in d, so that a
// request or a Pod counts once per policy however many of its images break it. (A policy's
// violations in one decision share its mode.)
func (d *Decision) FirstOfPolicy(i int) bool { return d.Violations[i].first }

// Allowed reports whether the subject is admitted: no Enforce violation.
func (d *Decision) Allowed() bool {
	for i := range d.Violations {
		if d.Violations[i].Mode == v1alpha1.ModeEnforce {
			return false
		}
	}
	return true
}

// Messages returns the messages of the violations in the given mode, in order.
func (d *Decision) Messages(mode v1alpha1.PolicyMode) []string {
	var out []string
	for i := range d.Violations {
		if d.Violations[i].Mode == mode {
			out = append(out, d.Violations[i].Message())
		}
	}
	return out
}

// MaxMessages caps the violation messages of one answer (the denial, the warnings): a Pod
// refused by a thousand policies gets the first MaxMessages and a count of the rest, not a
// megabyte the apiserver would log and kubectl print. The audit annotation still names every
// policy.
const MaxMessages = 20

// DenialMessage is the reason of a denial: the Enforce messages, one per line, capped.
func (d *Decision) DenialMessage() string {
	return strings.Join(d.capped(v1alpha1.ModeEnforce), "\n")
}

// WarningMessages are the Warn messages, capped.
func (d *Decision) WarningMessages() []string { return d.capped(v1alpha1.ModeWarn) }

func (d *Decision) capped(mode v1alpha1.PolicyMode) []string {
	var out []string
	n, policies := 0, 0
	for i := range d.Violations {
		v := &d.Violations[i]
		if v.Mode != mode {
			continue
		}
		n++
		if v.first {
			policies++
		}
		if n <= MaxMessages {
			out = append(out, v.Message())
		}
	}
	if n > MaxMessages {
		out = append(out, fmt.Sprintf("... and %d more violations (%d in all, of %d policies; the audit annotation %q names every policy)", n-MaxMessages, n, policies, AnnotationPolicies))
	}
	return out
}

// Audit annotation keys. The apiserver prefixes them with the webhook's name.
const (
	AnnotationDecision = "decision"
	AnnotationPolicies = "policies"
	// AnnotationBreakGlass lists the policies (Kind/name, sorted) whose denial break-glass
	// overrode.
	AnnotationBreakGlass = "break-glass"
)

// Values of the decision annotation.
const (
	DecisionAllowed             = "allowed"
	DecisionAllowedWithWarnings = "allowed-with-warnings"
	DecisionAllowedByBreakGlass = "allowed-by-break-glass"
	DecisionAllowedWithAudit    = "allowed-with-audit-violations"
	DecisionDenied              = "denied"
)

// Outcome is the decision annotation value.
func (d *Decision) Outcome() string {
	warn, audit, glass := false, false, false
	for i := range d.Violations {
		glass = glass || d.Violations[i].BreakGlass
		switch d.Violations[i].Mode {
		case v1alpha1.ModeEnforce:
			return DecisionDenied
		case v1alpha1.ModeWarn:
			warn = true
		case v1alpha1.ModeAudit:
			audit = true
		}
	}
	switch {
	case glass:
		return DecisionAllowedByBreakGlass
	case warn:
		return DecisionAllowedWithWarnings
	case audit:
		return DecisionAllowedWithAudit
	default:
		return DecisionAllowed
	}
}

// AuditAnnotations are the annotations that record the decision in the apiserver's audit
// log: the outcome always, and the policies that found violations (Mode:Kind/name, sorted).
func (d *Decision) AuditAnnotations() map[string]string {
	a := map[string]string{AnnotationDecision: d.Outcome()}
	if len(d.Violations) > 0 {
		var names []string
		for i := range d.Violations {
			v := &d.Violations[i]
			if v.first {
				names = append(names, string(v.Mode)+":"+v.Policy.String())
			}
		}
		slices.Sort(names)
		a[AnnotationPolicies] = strings.Join(names, ",")
	}
	var glass []string
	for i := range d.Violations {
		if v := &d.Violations[i]; v.BreakGlass && v.first {
			glass = append(glass, v.Policy.String())
		}
	}
	if len(glass) > 0 {
		slices.Sort(glass)
		a[AnnotationBreakGlass] = strings.Join(glass, ",")
	}
	if len(d.Exempted) > 0 {
		a[AnnotationExceptions] = strings.Join(d.ExceptionNames(), ",")
	}
	return a
}

func (d *Decision) add(img *Image, ref *imageref.Reference, p *compiledPolicy, rule Rule, reason string) {
	if n := len(d.Violations); n >= 64 && n == cap(d.Violations) {
		// Double: append grows a long slice by a quarter, which copies the violations of a
		// Pod refused by a thousand policies about five times over. Asking for more than n
		// makes the new capacity at least 2n+1 in one step (rounded up to the allocator's
		// size class), with no quarter steps.
		d.Violations = slices.Grow(d.Violations, n+1)
	}
	d.Violations = append(d.Violations, Violation{
		Field: img.Field, Image: img.Ref, Container: img.Container, Normalized: ref.Normalized,
		Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: rule, Reason: reason,
	})
}

// markFirsts flags the first violation of each policy in one pass, so that counting per
// policy stays linear when a thousand policies refuse the same Pod.
func markFirsts(d *Decision, sc *scratch) {
	if len(d.Violations) == 0 {
		return
	}
	g := sc.next()
	for i := range d.Violations {
		v := &d.Violations[i]
		if m := &sc.marks[v.policyIdx]; m.gen != g {
			m.gen, v.first = g, true
		}
	}
}
