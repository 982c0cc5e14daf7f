package policy

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
)

// NameRules are the rules of one policy that need no registry, compiled: what another
// evaluator (the apiserver's ValidatingAdmissionPolicies, internal/vap) needs to decide them
// exactly as Evaluate does.
type NameRules struct {
	Ref Ref
	// Mode is the mode the policy acts in now (Audit while an AfterCleanAudit policy waits).
	Mode v1alpha1.PolicyMode
	// NamespaceSelector and PodSelector are as written; nil or empty: every one.
	NamespaceSelector, PodSelector *metav1.LabelSelector
	// Allow, Deny and Exempt are the compiled patterns of images.allow, images.deny and
	// exemptImages, each in the order written (Deny[i] is images.deny[i] unless a pattern
	// failed to compile, which makes the policy invalid and leaves it out of NameRules).
	Allow, Deny, Exempt []imageref.Pattern
	// DenyWritten are the images.deny patterns as written, for messages.
	DenyWritten []string
	TagDeny     []string
	RequireTag  bool
	// RequireDigest is requireDigest.
	RequireDigest bool
	// BreakGlass is allowBreakGlass.
	BreakGlass bool
	// Verifies says the policy has a verify section, which only the webhook can decide.
	Verifies bool
	// Webhook, when set, is why the name rules of this policy can be decided only by the
	// webhook: an exception names it, its break-glass needs an exception, or it is invalid.
	Webhook string
}

// NameRules lists the name rules of every policy, in evaluation order, with Webhook set for
// those only Evaluate can decide at now (an exception that is active at now names them).
func (s *Snapshot) NameRules(now time.Time) []NameRules {
	named := map[Ref]bool{}
	for _, list := range s.exceptions {
		for _, c := range list {
			if !c.activeAt(now) {
				continue
			}
			for _, t := range c.targets {
				named[t.policy] = true
			}
		}
	}
	out := make([]NameRules, 0, len(s.policies))
	for i := range s.policies {
		p := &s.policies[i]
		if p.names == nil {
			out = append(out, NameRules{Ref: p.ref, Mode: p.mode, Webhook: "the policy is invalid: " + p.invalid})
			continue
		}
		r := *p.names
		switch {
		case s.glassNeedsException[p.ref]:
			r.Webhook = "its break-glass needs an ImagePolicyException"
		case named[p.ref] && !s.noExceptions[p.ref]:
			r.Webhook = "an ImagePolicyException names it"
		}
		out = append(out, r)
	}
	return out
}

// NextExceptionChange is the first expiry of an exception after now (zero: none), when
// NameRules may change without a new snapshot.
func (s *Snapshot) NextExceptionChange(now time.Time) time.Time {
	var next time.Time
	for _, list := range s.exceptions {
		for _, c := range list {
			if !c.expires.IsZero() && c.expires.After(now) && (next.IsZero() || c.expires.Before(next)) {
				next = c.expires
			}
		}
	}
	return next
}
