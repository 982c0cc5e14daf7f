// Package preflight says what a policy change would break before it breaks it: which running
// Pods a new version of a policy would refuse at their next creation (a restart, a
// reschedule, a node drain). It judges each running Pod with the engine, the way the audit
// does (the digests its containers run), and answers verify rules only from what is already
// known, never from a registry. The policy webhook and the CLI call it.
package preflight

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/text"
	"github.com/imagegate/imagegate/internal/verify"
)

// Pod is a running Pod as the preflight judges it.
type Pod struct {
	Namespace, Name string
	// Subject is the Pod with the digests its containers run (podspec.SetRunning).
	Subject policy.Subject
}

// Finding is one running Pod the policy would refuse, or cannot tell about yet.
type Finding struct {
	Namespace, Name string
	// Message is the first reason, as the webhook would give it.
	Message string
}

// Namespace is what the preflight found in one namespace.
type Namespace struct {
	// Covered counts the running Pods the policy covers there.
	Covered int
	// Refused are the Pods it would refuse; Unverified those whose images its verify rules
	// have not checked yet (and that it refuses for nothing else).
	Refused, Unverified []Finding
}

// Result is what a policy would do to the running Pods.
type Result struct {
	// Policy is the policy judged, and Mode its mode as written.
	Policy policy.Ref
	Mode   v1alpha1.PolicyMode
	// AfterCleanAudit: the policy waits for a clean audit before it refuses.
	AfterCleanAudit bool
	// Namespaces holds, by namespace, what it found.
	Namespaces map[string]*Namespace
}

// Judge is a preflight in progress: Add each running Pod, then read Result.
type Judge struct {
	snap   *policy.Snapshot
	known  verify.Checker
	result Result
}

// New judges the policy ref of snap, a snapshot compiled with policy.Options.AsWritten (the
// policy, and the exceptions in force, are enough). known answers verify rules from what is
// already known (verify.Verifier.Known); nil: every image a verify rule covers is not
// verified yet (verify.NothingKnown).
func New(snap *policy.Snapshot, ref policy.Ref, mode v1alpha1.PolicyMode, afterCleanAudit bool, known verify.Checker) *Judge {
	if mode == "" {
		mode = v1alpha1.ModeEnforce
	}
	if known == nil {
		known = verify.NothingKnown
	}
	return &Judge{snap: snap, known: known, result: Result{Policy: ref, Mode: mode, AfterCleanAudit: afterCleanAudit, Namespaces: map[string]*Namespace{}}}
}

// Add judges one running Pod.
func (j *Judge) Add(ctx context.Context, p *Pod) {
	covering := j.snap.Covering(&p.Subject)
	d := verify.Decide(ctx, j.snap, &p.Subject, j.known, verify.Steps{Verify: true}).Decision
	if len(covering) == 0 && len(d.Violations) == 0 {
		return
	}
	ns := j.result.Namespaces[p.Namespace]
	if ns == nil {
		ns = &Namespace{}
		j.result.Namespaces[p.Namespace] = ns
	}
	ns.Covered++
	var refused, unverified string
	for i := range d.Violations {
		v := &d.Violations[i]
		if v.Policy != j.result.Policy || v.BreakGlass {
			continue
		}
		// Not judged yet: a digest nothing has verified, or a tag the pinning webhook would
		// pin at the next creation.
		if v.Rule == policy.RuleVerify && (v.Reason == verify.NotVerifiedYet || v.Reason == policy.ReasonUnpinned) {
			if unverified == "" {
				unverified = v.Field + " " + policy.Printable(v.Image)
			}
			continue
		}
		if refused == "" {
			refused = v.Message()
		}
	}
	switch {
	case refused != "":
		ns.Refused = append(ns.Refused, Finding{Namespace: p.Namespace, Name: p.Name, Message: refused})
	case unverified != "":
		ns.Unverified = append(ns.Unverified, Finding{Namespace: p.Namespace, Name: p.Name, Message: unverified})
	}
}

// Result is what the Pods added so far found.
func (j *Judge) Result() *Result { return &j.result }

// Keep leaves out the namespaces keep refuses (those whose Pods the asker may not list).
func (r *Result) Keep(keep func(namespace string) bool) {
	maps.DeleteFunc(r.Namespaces, func(ns string, _ *Namespace) bool { return !keep(ns) })
}

// Totals counts the covered, refused and unverified Pods.
func (r *Result) Totals() (covered, refused, unverified int) {
	for _, ns := range r.Namespaces {
		covered += ns.Covered
		refused += len(ns.Refused)
		unverified += len(ns.Unverified)
	}
	return covered, refused, unverified
}

// Bounds of the warnings: the apiserver keeps at most 4 KiB of warnings per response and may
// cut longer ones, so each stays under warningMax characters and few are listed.
const (
	warningMax  = 250
	listedPods  = 5
	listedNames = 5
)

// Warnings says in a few lines what the policy would refuse among the running Pods: a count
// by namespace, the first Pods with their first reason, those not verified yet. It says
// nothing for a policy that refuses nothing (mode Warn or Audit), and, unless quiet is false,
// nothing when no running Pod would be refused.
func (r *Result) Warnings(quiet bool) []string {
	if r.Mode != v1alpha1.ModeEnforce {
		return nil
	}
	covered, refused, unverified := r.Totals()
	name := fmt.Sprintf("%s %q", r.Policy.Kind, r.Policy.Name)
	if refused == 0 && unverified == 0 {
		if quiet {
			return nil
		}
		return []string{fmt.Sprintf("%s would refuse none of the %d running Pods it covers", name, covered)}
	}
	var out []string
	if refused > 0 {
		all := r.findings(func(ns *Namespace) []Finding { return ns.Refused })
		out = append(out, fmt.Sprintf("%s would refuse %d of the %d running Pods it covers at their next restart (%s)", name, refused, covered, r.byNamespace(func(ns *Namespace) int { return len(ns.Refused) })))
		for _, f := range all[:min(listedPods, len(all))] {
			out = append(out, text.Cut(fmt.Sprintf("would refuse %s/%s: %s", f.Namespace, f.Name, f.Message), warningMax))
		}
		if len(all) > listedPods {
			out = append(out, fmt.Sprintf("... and %d more (status.audit after the next audit, or imagegate check --cluster --running, lists them)", len(all)-listedPods))
		}
	}
	if unverified > 0 {
		all := r.findings(func(ns *Namespace) []Finding { return ns.Unverified })
		var pods []string
		for _, f := range all[:min(listedNames, len(all))] {
			pods = append(pods, f.Namespace+"/"+f.Name)
		}
		more := ""
		if len(all) > listedNames {
			more = fmt.Sprintf(" and %d more", len(all)-listedNames)
		}
		out = append(out, text.Cut(fmt.Sprintf("%d running Pods run images that its verify rules have not verified yet, so whether it refuses them is not known: %s%s", unverified, strings.Join(pods, ", "), more), warningMax))
	}
	if r.AfterCleanAudit {
		out = append(out, "enforcement AfterCleanAudit: the policy acts as Audit until an audit pass finds no running Pod that it would refuse")
	}
	return out
}

// findings lists what pick selects, by namespace and Pod name.
func (r *Result) findings(pick func(*Namespace) []Finding) []Finding {
	var all []Finding
	for _, ns := range slices.Sorted(maps.Keys(r.Namespaces)) {
		all = append(all, pick(r.Namespaces[ns])...)
	}
	slices.SortStableFunc(all, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return all
}

// byNamespace is "team-a: 10, team-b: 2, ...": the namespaces with the most first.
func (r *Result) byNamespace(count func(*Namespace) int) string {
	type entry struct {
		name string
		n    int
	}
	var list []entry
	for name, ns := range r.Namespaces {
		if n := count(ns); n > 0 {
			list = append(list, entry{name, n})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.name, b.name)) })
	var parts []string
	for _, e := range list[:min(listedNames, len(list))] {
		parts = append(parts, fmt.Sprintf("%s: %d", e.name, e.n))
	}
	if len(list) > listedNames {
		parts = append(parts, fmt.Sprintf("%d more namespaces", len(list)-listedNames))
	}
	return strings.Join(parts, ", ")
}
