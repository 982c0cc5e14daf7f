package policy

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
)

// Image is one image of a Pod, with the field path it was written at.
type Image struct {
	// Field is the field path, such as spec.containers[0].image.
	Field string
	// Ref is the image reference as written.
	Ref string
	// Container is the container's name (or the image volume's).
	Container string
}

// Subject is what a decision is about: a Pod (or pod template), its namespace and its images.
type Subject struct {
	// Namespace is the Pod's namespace.
	Namespace string
	// NamespaceLabels are the labels of that namespace.
	NamespaceLabels map[string]string
	// NamespaceUnknown says the namespace's labels could not be read (not in the cache yet).
	// Policies that select namespaces by label then refuse rather than guess.
	NamespaceUnknown bool
	// PodLabels are the Pod's labels.
	PodLabels map[string]string
	// PodLabelsUnknown says the Pod's labels are not known (ImagePolicyWebhook does not send
	// them). A policy with a podSelector then covers the Pod: it is applied rather than
	// skipped, so that missing information never admits what the policy would deny.
	PodLabelsUnknown bool
	// Workload says the subject is a workload's pod template rather than a Pod: policies with
	// checkWorkloads: false do not cover it.
	Workload bool
	// BreakGlass says the Pod asks for break-glass (see BreakGlassRequested). Violations of
	// Enforce policies that allow break-glass then admit, as warnings.
	BreakGlass bool
	// Images are the images to check: all of a new Pod's, only the new or changed ones of an
	// updated Pod.
	Images []Image
}

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
	case v.Normalized == "":
		fmt.Fprintf(&b, "image %q", v.Image)
	default:
		fmt.Fprintf(&b, "image %q (%s)", v.Image, v.Normalized)
	}
	fmt.Fprintf(&b, " is not allowed by %s %q: %s", v.Policy.Kind, v.Policy.Name, v.Reason)
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
	return a
}

// BreakGlassRequested reports whether annotations ask for break-glass, as the
// ImagePolicyWebhook convention spells it: a key ending in `.image-policy.k8s.io/break-glass`
// (for example alpha.image-policy.k8s.io/break-glass) with the value "true".
func BreakGlassRequested(annotations map[string]string) bool {
	for k, v := range annotations {
		if v == "true" && strings.HasSuffix(k, BreakGlassKeySuffix) && len(k) > len(BreakGlassKeySuffix) {
			return true
		}
	}
	return false
}

// BreakGlassKeySuffix ends the annotation key that asks for break-glass.
const BreakGlassKeySuffix = ".image-policy.k8s.io/break-glass"

// mark records, for one image, which lists of a policy it matched.
type mark struct {
	gen    uint32
	allow  bool
	exempt bool
	deny   int32 // 1 + position of the first images.deny pattern matched; 0: none
}

// scratch is per-evaluation working memory, pooled so that evaluation allocates the same
// whatever the number of policies.
type scratch struct {
	gen       uint32   // stamp of the current evaluation or image; bumped for each
	evalGen   uint32   // stamp of the current evaluation
	marks     []mark   // per policy, for the current image
	coveredAt []uint32 // per policy: evalGen when it covers the current subject
	covered   []int32
	// Per image: covered policies with images.allow that an allow or exempt pattern
	// satisfied, and covered policies that an images.deny pattern hit.
	satisfied, denied int
	coveredAllow      int // covered policies with images.allow
}

// next returns a fresh stamp, clearing the stamped arrays when the counter wraps so that a
// stale stamp can never look current.
func (sc *scratch) next() uint32 {
	sc.gen++
	if sc.gen == 0 {
		clear(sc.marks)
		clear(sc.coveredAt)
		// Keep the current evaluation's coverage: the wrap may come between two images.
		sc.evalGen, sc.gen = 1, 2
		for _, idx := range sc.covered {
			sc.coveredAt[idx] = sc.evalGen
		}
	}
	return sc.gen
}

// Evaluate decides the subject against the snapshot.
func (s *Snapshot) Evaluate(sub *Subject) Decision {
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	d := s.evaluate(sub, sc)
	if sub.BreakGlass && len(s.breakGlass) > 0 {
		s.applyBreakGlass(&d)
	}
	return d
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

func (s *Snapshot) evaluate(sub *Subject, sc *scratch) Decision {
	d := s.violations(sub, sc)
	markFirsts(&d, sc)
	return d
}

func (s *Snapshot) violations(sub *Subject, sc *scratch) Decision {
	d := Decision{}
	if len(sub.Images) == 0 {
		// Nothing to check (an UPDATE that changes no image): not even an invalid policy or an
		// unknown namespace may block it, or a later policy would break label edits.
		return d
	}
	sc.evalGen = sc.next()
	sc.coveredAllow = 0
	sc.covered = s.covering(sub, sc.covered[:0], &d)
	for _, idx := range sc.covered {
		sc.coveredAt[idx] = sc.evalGen
		if s.policies[idx].hasAllow {
			sc.coveredAllow++
		}
	}
	d.Covered = len(sc.covered)
	if len(sc.covered) == 0 {
		return d
	}
	for i := range sub.Images {
		s.evaluateImage(&sub.Images[i], sc, &d)
	}
	return d
}

// applyBreakGlass turns the denials of policies that allow break-glass into warnings.
func (s *Snapshot) applyBreakGlass(d *Decision) {
	for i := range d.Violations {
		v := &d.Violations[i]
		if v.Mode == v1alpha1.ModeEnforce && s.breakGlass[v.Policy] {
			v.Mode, v.BreakGlass = v1alpha1.ModeWarn, true
		}
	}
}

// covering lists the policies that cover the subject. Policies that cannot tell (an invalid
// policy, a namespace whose labels are unknown) add their violation to d here.
func (s *Snapshot) covering(sub *Subject, out []int32, d *Decision) []int32 {
	nsLabels, podLabels := labels.Set(sub.NamespaceLabels), labels.Set(sub.PodLabels)
	for _, idx := range s.cluster {
		p := &s.policies[idx]
		if p.nsSelector != nil {
			if sub.NamespaceUnknown {
				d.Violations = append(d.Violations, Violation{
					Field: "metadata.namespace", Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: RuleNamespace,
					Reason: fmt.Sprintf("the labels of namespace %q are not known yet, so whether the policy applies cannot be told; retry", sub.Namespace),
				})
				continue
			}
			if !p.nsSelector.Matches(nsLabels) {
				continue
			}
		}
		out = s.coverPod(idx, podLabels, sub, out, d)
	}
	for _, idx := range s.byNamespace[sub.Namespace] {
		out = s.coverPod(idx, podLabels, sub, out, d)
	}
	return out
}

func (s *Snapshot) coverPod(idx int32, podLabels labels.Set, sub *Subject, out []int32, d *Decision) []int32 {
	p := &s.policies[idx]
	if sub.Workload && p.skipWorkloads {
		return out
	}
	if p.podSelector != nil && !sub.PodLabelsUnknown && !p.podSelector.Matches(podLabels) {
		return out
	}
	if p.invalid != "" {
		d.Violations = append(d.Violations, Violation{
			Field: "spec", Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: RuleInvalidPolicy,
			Reason: "the policy is invalid, so it refuses every Pod it may cover until it is fixed: " + p.invalid,
		})
		return out
	}
	return append(out, idx)
}

func (s *Snapshot) evaluateImage(img *Image, sc *scratch, d *Decision) {
	ref, err := s.refs.Parse(img.Ref)
	if err != nil {
		for _, idx := range sc.covered {
			p := &s.policies[idx]
			d.Violations = append(d.Violations, Violation{
				Field: img.Field, Image: img.Ref, Container: img.Container, Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: RuleReference,
				Reason: "it is not a valid image reference: " + err.Error(),
			})
		}
		return
	}
	sc.next()
	sc.satisfied, sc.denied = 0, 0
	s.markMatches(&ref, sc)
	if sc.denied == 0 && sc.satisfied == sc.coveredAllow && !s.versionRuleHit(&ref, sc) {
		return // the common case: nothing to report, found without visiting every policy
	}
	for _, idx := range sc.covered {
		p := &s.policies[idx]
		m := &sc.marks[idx]
		matched := m.gen == sc.gen
		if matched && m.exempt {
			continue
		}
		if matched && m.deny > 0 {
			i := m.deny - 1
			d.add(img, &ref, p, RuleDeny, fmt.Sprintf("it matches images.deny[%d] %q", i, p.denyPatterns[i]))
		}
		if p.hasAllow && (!matched || !m.allow) {
			d.add(img, &ref, p, RuleAllow, "it matches no pattern in images.allow")
		}
		checkVersion(img, &ref, p, d)
	}
}

// versionRuleHit reports whether a covered policy may have a tag or digest rule that the
// image breaks. It may say yes for an exempt policy; the full check sorts that out.
func (s *Snapshot) versionRuleHit(ref *imageref.Reference, sc *scratch) bool {
	if ref.Digest != "" {
		return false
	}
	anyCovered := func(idxs []int32) bool {
		for _, idx := range idxs {
			if sc.coveredAt[idx] == sc.evalGen {
				return true
			}
		}
		return false
	}
	return anyCovered(s.requireDigest) ||
		(ref.Tag == "" && anyCovered(s.requireTag)) ||
		anyCovered(s.tagDenied[ref.EffectiveTag()])
}

// checkVersion applies the tag and digest rules of a policy to one image.
func checkVersion(img *Image, ref *imageref.Reference, p *compiledPolicy, d *Decision) {
	if p.requireDigest && ref.Digest == "" {
		d.add(img, ref, p, RuleRequireDigest, "it is not pinned by digest (@sha256:...) and requireDigest is set")
	}
	if ref.Digest != "" {
		return // the runtime pulls the digest; tag rules do not apply
	}
	if p.requireTag && ref.Tag == "" {
		d.add(img, ref, p, RuleRequireTag, "it has neither tag nor digest and tags.requireTag is set")
	}
	if tag := ref.EffectiveTag(); slices.Contains(p.tagDeny, tag) {
		if ref.Tag == "" {
			d.add(img, ref, p, RuleTagDeny, fmt.Sprintf("it has neither tag nor digest, so it runs as %q, which is in tags.deny", tag))
		} else {
			d.add(img, ref, p, RuleTagDeny, fmt.Sprintf("its tag %q is in tags.deny", tag))
		}
	}
}

func (d *Decision) add(img *Image, ref *imageref.Reference, p *compiledPolicy, rule Rule, reason string) {
	d.Violations = append(d.Violations, Violation{
		Field: img.Field, Image: img.Ref, Container: img.Container, Normalized: ref.Normalized,
		Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: rule, Reason: reason,
	})
}

// markMatches walks the trie along the image's registry and path and marks, for every
// pattern that matches, the policy and list it belongs to.
func (s *Snapshot) markMatches(ref *imageref.Reference, sc *scratch) {
	n := s.hosts[ref.Host]
	rest := ref.Path
	for n != nil {
		for _, m := range n.matchers {
			var ok bool
			if m.rest == nil {
				ok = rest == ""
			} else {
				ok = imageref.MatchSegments(m.rest, rest)
			}
			if ok && m.pattern.MatchVersion(ref) {
				sc.mark(m.targets)
			}
		}
		if rest == "" {
			return
		}
		head, tail, _ := strings.Cut(rest, "/")
		n, rest = n.children[head], tail
	}
}

func (sc *scratch) mark(targets []target) {
	for _, t := range targets {
		if sc.coveredAt[t.policy] != sc.evalGen {
			continue
		}
		m := &sc.marks[t.policy]
		if m.gen != sc.gen {
			*m = mark{gen: sc.gen}
		}
		switch t.list {
		case listAllow, listExempt:
			if t.hasAllow && !m.allow && !m.exempt {
				sc.satisfied++
			}
			if t.list == listAllow {
				m.allow = true
			} else {
				m.exempt = true
			}
		case listDeny:
			if m.deny == 0 {
				sc.denied++
			}
			if m.deny == 0 || t.index+1 < m.deny {
				m.deny = t.index + 1
			}
		}
	}
}
