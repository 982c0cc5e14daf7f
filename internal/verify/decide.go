package verify

import (
	"context"
	"errors"
	"slices"

	"github.com/imagegate/imagegate/internal/policy"
)

// Checker checks images in their registries: a *Verifier, or what stands for one (the audit
// answers from the verifications it ran for many Pods at once).
type Checker interface {
	// Outcomes returns, per pending verification, what checking it found.
	Outcomes(ctx context.Context, pending []policy.Verification) []*Outcome
	// Resolve returns the digest an unpinned image's tag names now.
	Resolve(ctx context.Context, u *policy.Unpinned) (string, error)
}

// Unavailable is the reason of every verification, and of every pinning, that Decide is asked
// for without a Checker: nothing can be checked, so the image fails (closed).
const Unavailable = "imagegate runs without a registry verifier here, so no signature can be checked"

// Steps says what Decide does after evaluating the subject with the snapshot.
type Steps struct {
	// Pin resolves each tag a verify rule covers to the digest it names now (what the
	// pinning webhook does), and, when Verify is set too, decides with the images so pinned.
	Pin bool
	// Verify checks each pending verification in its registry and settles the decision with
	// what it found (what the validating webhook does).
	Verify bool
	// Registry, when set, gives the context for registry work (the namespace's quota, the
	// Pod's pull secrets); it is called once, and only when there is registry work to do.
	Registry func(context.Context) context.Context
}

// Pin is a tag that Decide resolved, or tried to.
type Pin struct {
	*policy.Unpinned
	// Digest is the digest the tag names now; Err says why there is none.
	Digest string
	Err    error
}

// Checked is a verification that Decide checked, with what it found.
type Checked struct {
	policy.Verification
	*Outcome
}

// Result is Decide's answer.
type Result struct {
	// Decision is the settled decision.
	Decision policy.Decision
	// Pins are the tags resolved (Steps.Pin), in the order of Decision.ToPin.
	Pins []Pin
	// Checked are the verifications the decision was settled with (Steps.Verify).
	Checked []Checked
}

// Decide is the one decision pipeline of every endpoint: the Pod webhooks, ImageReview, the
// audit and the CLI. It evaluates sub with snap, then, as steps asks, pins the tags verify
// rules cover and verifies what is pending with c, and settles the decision. With Pin and
// Verify both, sub.Images holds the pinned images afterwards. A nil c fails every
// verification and pinning with Unavailable.
func Decide(ctx context.Context, snap *policy.Snapshot, sub *policy.Subject, c Checker, steps Steps) Result {
	var r Result
	r.Decision = snap.Evaluate(sub)
	// The registry context is made once, and only when there is registry work (a local
	// closure: nothing is allocated for the many decisions that have none).
	var rctx context.Context
	registry := func() context.Context {
		if rctx == nil {
			rctx = ctx
			if steps.Registry != nil {
				rctx = steps.Registry(ctx)
			}
		}
		return rctx
	}
	if steps.Pin {
		if toPin := r.Decision.ToPin(sub); len(toPin) > 0 {
			pinCtx := registry()
			r.Pins = make([]Pin, len(toPin))
			for i, u := range toPin {
				r.Pins[i].Unpinned = u
				if c == nil {
					r.Pins[i].Err = errors.New(Unavailable)
					continue
				}
				r.Pins[i].Digest, r.Pins[i].Err = c.Resolve(pinCtx, u)
			}
			if steps.Verify && r.pin(sub) {
				r.Decision = snap.Evaluate(sub)
			}
		}
	}
	if !steps.Verify || len(r.Decision.Pending) == 0 {
		return r
	}
	pending := r.Decision.Pending
	var outcomes []*Outcome
	if c == nil {
		outcomes = make([]*Outcome, len(pending))
		for i := range outcomes {
			outcomes[i] = &Outcome{Reason: Unavailable}
		}
	} else {
		outcomes = c.Outcomes(registry(), pending)
	}
	results := make([]policy.VerifyResult, len(pending))
	r.Checked = make([]Checked, len(pending))
	for i, o := range outcomes {
		results[i] = o.Result()
		r.Checked[i] = Checked{Verification: pending[i], Outcome: o}
	}
	snap.Settle(sub, &r.Decision, results)
	return r
}

// pin writes the resolved digests into a copy of sub's images, and reports whether any was.
func (r *Result) pin(sub *policy.Subject) bool {
	var images []policy.Image
	for _, p := range r.Pins {
		if p.Err != nil {
			continue
		}
		if images == nil {
			images = slices.Clone(sub.Images)
		}
		for j := range images {
			if images[j].Field == p.Image.Field {
				images[j].Ref = p.Pinned(p.Digest)
			}
		}
	}
	if images == nil {
		return false
	}
	sub.Images = images
	return true
}
