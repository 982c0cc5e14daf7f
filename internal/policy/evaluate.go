package policy

import (
	"github.com/imagegate/imagegate/api/v1alpha1"

	"errors"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/imagegate/imagegate/internal/imageref"
)

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
	coveredAllow      int  // covered policies with images.allow
	workload          bool // the subject is a pod template
	// The fast path's sets (admit.go): the covering policies, and those an image satisfies.
	coveredSet, satisfiedSet bitset
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
	var active []*compiledException
	if len(s.exceptions) > 0 && (len(d.Violations) > 0 || len(d.Pending) > 0) {
		if active = s.activeExceptions(sub); len(active) > 0 {
			s.applyExceptions(&d, active)
		}
	}
	if sub.BreakGlass && len(s.breakGlass) > 0 {
		s.applyBreakGlass(&d, active)
	}
	if len(d.Pending) > 0 || len(d.Unpinned) > 0 {
		d.dropRefused()
	}
	return d
}

// dropRefused removes the verifications and pinnings of images that a name rule refuses in
// Enforce whatever the registry says: no registry is contacted for an image that cannot run,
// so an image string no policy allows never decides where imagegate connects.
func (d *Decision) dropRefused() {
	refused := func(field string) bool {
		for i := range d.Violations {
			v := &d.Violations[i]
			if v.Field == field && v.Mode == v1alpha1.ModeEnforce && v.Rule != RuleVerify {
				return true
			}
		}
		return false
	}
	pending := d.Pending[:0]
	for _, pv := range d.Pending {
		if !refused(pv.Image.Field) {
			pending = append(pending, pv)
		}
	}
	d.Pending = pending
	unpinned := d.Unpinned[:0]
	for _, u := range d.Unpinned {
		if !refused(u.Image.Field) {
			unpinned = append(unpinned, u)
		}
	}
	d.Unpinned = unpinned
}

func (s *Snapshot) evaluate(sub *Subject, sc *scratch) Decision {
	d := s.violations(sub, sc)
	markFirsts(&d, sc)
	return d
}

func (s *Snapshot) violations(sub *Subject, sc *scratch) Decision {
	d := Decision{}
	if s.admitted(sub, sc, &d) {
		return d
	}
	sc.workload = sub.Workload && !sub.VerifyTemplates
	// Nothing to check (an UPDATE that changes no image and no label): not even an invalid
	// policy or an unknown namespace may block it, or a later policy would break edits.
	if len(sub.Images) > 0 {
		sc.covered = s.covering(sub, sc.covered[:0], &d)
		d.Covered = len(sc.covered)
		s.evaluateImages(sub.Images, sc, &d)
	}
	if sub.relabelled() {
		// Policies that cover the Pod only since its labels changed have never judged its
		// other images: a Pod must not be relabelled into a podSelector with an image the
		// policy refuses.
		sc.covered = s.newlyCovering(sub, sc.covered[:0], len(sub.Images) == 0, &d)
		if d.Covered == 0 {
			d.Covered = len(sc.covered)
		}
		s.evaluateImages(sub.Unchanged, sc, &d)
	}
	return d
}

// evaluateImages checks images against the policies in sc.covered.
func (s *Snapshot) evaluateImages(images []Image, sc *scratch, d *Decision) {
	if len(sc.covered) == 0 {
		return
	}
	sc.evalGen = sc.next()
	sc.coveredAllow = 0
	for _, idx := range sc.covered {
		sc.coveredAt[idx] = sc.evalGen
		if s.policies[idx].hasAllow {
			sc.coveredAllow++
		}
	}
	for i := range images {
		s.evaluateImage(&images[i], sc, d)
	}
}

// newlyCovering lists the policies that cover an updated Pod but did not cover it before its
// labels changed. Only a podSelector can tell the two apart: the namespace, whether the
// subject is a workload and whether a policy is valid are the same before and after. A policy
// whose namespaceSelector cannot be told (labels not known) refuses, as in covering, when
// reportUnknown (covering has not said so already).
func (s *Snapshot) newlyCovering(sub *Subject, out []int32, reportUnknown bool, d *Decision) []int32 {
	now, before, nsLabels := labels.Set(sub.PodLabels), labels.Set(sub.OldPodLabels), labels.Set(sub.NamespaceLabels)
	newly := func(p *compiledPolicy) bool {
		return p.podSelector != nil && p.invalid == "" && (!sub.Workload || !p.skipWorkloads) &&
			p.podSelector.Matches(now) && !p.podSelector.Matches(before)
	}
	for _, idx := range s.cluster {
		p := &s.policies[idx]
		if !newly(p) {
			continue
		}
		if p.nsSelector != nil {
			if sub.NamespaceUnknown {
				if reportUnknown {
					d.Violations = append(d.Violations, namespaceUnknown(p, sub.Namespace))
				}
				continue
			}
			if !p.nsSelector.Matches(nsLabels) {
				continue
			}
		}
		out = append(out, idx)
	}
	for _, idx := range s.byNamespace[sub.Namespace] {
		if newly(&s.policies[idx]) {
			out = append(out, idx)
		}
	}
	return out
}

func namespaceUnknown(p *compiledPolicy, namespace string) Violation {
	return Violation{
		Field: "metadata.namespace", Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: RuleNamespace,
		Reason: fmt.Sprintf("the labels of namespace %q are not known yet, so whether the policy applies cannot be told; retry", namespace),
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
				d.Violations = append(d.Violations, namespaceUnknown(p, sub.Namespace))
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

// podCovered reports whether the policy, in the subject's namespace, covers the Pod or
// template: its podSelector (unless the labels are not known) and checkWorkloads.
func (s *Snapshot) podCovered(p *compiledPolicy, podLabels labels.Set, sub *Subject) bool {
	if sub.Workload && p.skipWorkloads {
		return false
	}
	return p.podSelector == nil || sub.PodLabelsUnknown || p.podSelector.Matches(podLabels)
}

func (s *Snapshot) coverPod(idx int32, podLabels labels.Set, sub *Subject, out []int32, d *Decision) []int32 {
	p := &s.policies[idx]
	if !s.podCovered(p, podLabels, sub) {
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
		// The parser's reason may quote the image: it is made printable with the rest of the
		// message (Violation.Message), never written raw.
		reason := "it is not a valid image reference: " + err.Error()
		if errors.Is(err, imageref.ErrImageID) {
			reason = "it " + err.Error()
		}
		for _, idx := range sc.covered {
			p := &s.policies[idx]
			d.Violations = append(d.Violations, Violation{
				Field: img.Field, Image: img.Ref, Container: img.Container, Policy: p.ref, policyIdx: p.idx, Mode: p.mode, Rule: RuleReference,
				Reason: reason,
			})
		}
		return
	}
	sc.next()
	sc.satisfied, sc.denied = 0, 0
	s.markMatches(&ref, sc)
	if len(s.verifying) > 0 {
		s.collectVerify(img, &ref, sc, d)
	}
	if !s.fullEvaluation && sc.denied == 0 && sc.satisfied == sc.coveredAllow && !s.versionRuleHit(&ref, sc) {
		return // the common case: nothing to report, found without visiting every policy
	}
	var tagReason string // the same for every policy that denies the tag: built once
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
		checkVersion(img, &ref, p, d, &tagReason)
	}
}

// versionRuleHit reports whether a covered policy may have a tag or digest rule that the
// image breaks. It may say yes for an exempt policy; the full check sorts that out.
func (s *Snapshot) versionRuleHit(ref *imageref.Reference, sc *scratch) bool {
	return s.breaksVersionRule(ref, func(idxs []int32) bool {
		for _, idx := range idxs {
			if sc.coveredAt[idx] == sc.evalGen {
				return true
			}
		}
		return false
	})
}

// breaksVersionRule is the one statement, for the fast path (versionRuleHit) and the
// admission cache (imageAdmitted), of when a tag or digest rule refuses an image: covered
// says whether any of the policies given (by index) covers the subject. It must agree with
// checkVersion, which writes the messages: a rule added there must be added here, or the
// fast path skips it silently for every image that its pattern lists admit. FuzzFastPath
// compares the fast path with a full evaluation (Snapshot.fullEvaluation) and fails when
// this is forgotten.
func (s *Snapshot) breaksVersionRule(ref *imageref.Reference, covered func([]int32) bool) bool {
	if ref.Digest != "" {
		return false // the runtime pulls the digest; tag rules do not apply
	}
	return covered(s.requireDigest) ||
		(ref.Tag == "" && covered(s.requireTag)) ||
		covered(s.tagDenied[ref.EffectiveTag()])
}

// checkVersion applies the tag and digest rules of a policy to one image. A rule added here
// must also be known to breaksVersionRule.
func checkVersion(img *Image, ref *imageref.Reference, p *compiledPolicy, d *Decision, tagReason *string) {
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
		if *tagReason == "" {
			if ref.Tag == "" {
				*tagReason = fmt.Sprintf("it has neither tag nor digest, so it runs as %q, which is in tags.deny", tag)
			} else {
				*tagReason = fmt.Sprintf("its tag %q is in tags.deny", tag)
			}
		}
		d.add(img, ref, p, RuleTagDeny, *tagReason)
	}
}

// markMatches walks the trie along the image's registry and path and marks, for every
// pattern that matches, the policy and list it belongs to.
func (s *Snapshot) markMatches(ref *imageref.Reference, sc *scratch) {
	for m := range s.matching(ref) {
		sc.mark(m.targets)
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

// Covering lists the valid policies that cover the subject (for reports, which say which
// policies a Pod passes; the admission path never asks).
func (s *Snapshot) Covering(sub *Subject) []Ref {
	var d Decision
	idx := s.covering(sub, nil, &d)
	refs := make([]Ref, len(idx))
	for i, p := range idx {
		refs[i] = s.policies[p].ref
	}
	return refs
}
