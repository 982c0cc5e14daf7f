package policy

import (
	"math/bits"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/imagegate/imagegate/internal/imageref"
)

// The admission fast path. Most Pods break no policy, and with thousands of policies the
// general evaluation spends its time on per-policy bookkeeping (listing the covering
// policies, stamping them, marking each one a pattern satisfies) only to find nothing to
// report. admitted answers that common case with sets of policies as bitsets instead:
//
//   - covered: the cluster policies that cover every Pod (no selector, valid, no verify
//     section) are one precomputed set, copied; only policies with a selector, and the
//     namespace's own ImagePolicies, are looked at one by one;
//   - per image, the patterns it matches are found in the trie as before, and each adds the
//     policies whose images.allow (or exemptImages) it satisfies: a whole precomputed set for
//     a pattern many policies share, one bit per policy otherwise;
//   - the image clears when no covered policy with images.allow is left unsatisfied, no
//     covered policy denies it, and no covered policy has a tag or digest rule it breaks.
//
// Anything else (a violation, a policy that cannot tell whether it covers, a verify rule, a
// relabelled Pod, an unparsable image) returns false, and the general evaluation decides:
// admitted never refuses and never reports, so it can only be wrong by admitting what the
// general path refuses, which FuzzFastPath checks against a full evaluation.

// fastPathMinPolicies is the snapshot size from which admitted is tried first. Below it the
// general evaluation is as fast (about 300 ns for a 3-container Pod against one policy), and a
// refused Pod would pay for both (about 400 ns more).
const fastPathMinPolicies = 8

// bitset is a set of policy indices.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int32)      { b[i>>6] |= 1 << (i & 63) }
func (b bitset) has(i int32) bool { return b[i>>6]&(1<<(i&63)) != 0 }

func (b bitset) anyOf(idxs []int32) bool {
	for _, i := range idxs {
		if b.has(i) {
			return true
		}
	}
	return false
}

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// prepareAdmit builds what admitted needs once the policies are compiled: the sets of
// unconditional cluster policies, the policies with images.allow, and each shared pattern's
// set of the policies it satisfies (or, for a pattern few policies share, the list).
func (s *Snapshot) prepareAdmit(sparseOnly, always bool) {
	n := len(s.policies)
	s.fastPath = always || n >= fastPathMinPolicies
	s.hasAllowSet = newBitset(n)
	s.everyPod, s.everyTemplate = newBitset(n), newBitset(n)
	for i := range s.policies {
		if s.policies[i].hasAllow {
			s.hasAllowSet.set(int32(i)) //nolint:gosec // bounded: far fewer than 2^31 policies
		}
	}
	for _, idx := range s.cluster {
		p := &s.policies[idx]
		if p.nsSelector != nil || p.podSelector != nil || p.invalid != "" || p.verify != nil {
			s.conditional = append(s.conditional, idx)
			continue
		}
		s.everyPod.set(idx)
		if !p.skipWorkloads {
			s.everyTemplate.set(idx)
		}
	}
	words := len(s.hasAllowSet)
	var walk func(*node)
	walk = func(nd *node) {
		for _, m := range nd.matchers {
			satisfies := 0
			for _, t := range m.targets {
				switch {
				case t.list == listDeny:
					m.denies = append(m.denies, t.policy)
				case t.hasAllow:
					satisfies++
				}
			}
			// A set costs a word per 64 policies; a list, one entry per policy. Take the set
			// when it is no larger.
			if !sparseOnly && satisfies >= words {
				m.satisfies = newBitset(n)
				for _, t := range m.targets {
					if t.list != listDeny && t.hasAllow {
						m.satisfies.set(t.policy)
					}
				}
			}
		}
		for _, child := range nd.children {
			walk(child)
		}
	}
	for _, nd := range s.hosts {
		walk(nd)
	}
}

// admitted reports whether the subject breaks no policy and no verify rule covers it, without
// the general evaluation's per-policy work; on true, d is the decision (no violation, and the
// number of covering policies). False says nothing: the general evaluation decides.
func (s *Snapshot) admitted(sub *Subject, sc *scratch, d *Decision) bool {
	if !s.fastPath || s.fullEvaluation || len(sub.Images) == 0 || sub.relabelled() {
		return false
	}
	covered := sc.coveredSet
	if sub.Workload {
		copy(covered, s.everyTemplate)
	} else {
		copy(covered, s.everyPod)
	}
	nsLabels, podLabels := labels.Set(sub.NamespaceLabels), labels.Set(sub.PodLabels)
	for _, idx := range s.conditional {
		p := &s.policies[idx]
		if p.invalid != "" || (p.nsSelector != nil && sub.NamespaceUnknown) {
			return false // a violation
		}
		if p.nsSelector != nil && !p.nsSelector.Matches(nsLabels) {
			continue
		}
		if !s.podCovered(p, podLabels, sub) {
			continue
		}
		if p.verify != nil {
			return false
		}
		covered.set(idx)
	}
	for _, idx := range s.byNamespace[sub.Namespace] {
		p := &s.policies[idx]
		if !s.podCovered(p, podLabels, sub) {
			continue
		}
		if p.invalid != "" || p.verify != nil {
			return false
		}
		covered.set(idx)
	}
	for i := range sub.Images {
		if !s.imageAdmitted(sub.Images[i].Ref, covered, sc.satisfiedSet) {
			return false
		}
	}
	d.Covered = covered.count()
	return true
}

// imageAdmitted reports whether no covered policy refuses the image.
func (s *Snapshot) imageAdmitted(image string, covered, satisfied bitset) bool {
	ref, err := s.refs.Parse(image)
	if err != nil {
		return false
	}
	clear(satisfied)
	denied := false
	for m := range s.matching(&ref) {
		if covered.anyOf(m.denies) {
			denied = true
			break
		}
		if m.satisfies != nil {
			for w, bits := range m.satisfies {
				satisfied[w] |= bits
			}
			continue
		}
		for _, t := range m.targets {
			if t.list != listDeny && t.hasAllow {
				satisfied.set(t.policy)
			}
		}
	}
	if denied {
		return false
	}
	for w := range covered {
		if covered[w]&s.hasAllowSet[w]&^satisfied[w] != 0 {
			return false // a covered policy whose images.allow the image matches nowhere
		}
	}
	return !s.breaksVersionRule(&ref, covered.anyOf)
}

// matching yields the trie's patterns that match the image: those hung below its registry
// and leading path whose tail and version match too.
func (s *Snapshot) matching(ref *imageref.Reference) func(yield func(*matcher) bool) {
	return func(yield func(*matcher) bool) {
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
				if ok && m.pattern.MatchVersion(ref) && !yield(m) {
					return
				}
			}
			if rest == "" {
				return
			}
			head, tail, _ := strings.Cut(rest, "/")
			n, rest = n.children[head], tail
		}
	}
}
