package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/text"
	"github.com/imagegate/imagegate/internal/verify"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// AuditSamples is how many violations status.audit.samples keeps per policy.
const AuditSamples = 20

// Auditor evaluates every Pod in the cluster against the current policies, periodically and
// soon after each policy change, and writes each policy's status.audit. It runs on the leader
// only. Pods come from the manager's cache, one namespace at a time and without copies, so a
// run costs no apiserver request but the status patches, and memory for one namespace's
// references plus a bounded sample per policy.
type Auditor struct {
	// Client writes the status.
	Client client.Client
	// Cache lists Pods and reads Namespace labels (the manager's cache).
	Cache client.Reader
	// Snapshots gives the current policies and signals changes (the PolicyReconciler
	// publishes in it).
	Snapshots *policy.Store
	// Interval is the time between two runs without policy change.
	Interval time.Duration
	// Excluded namespaces are not audited, as the webhook does not cover them.
	Excluded []string
	// Metrics may be nil.
	Metrics *telemetry.Metrics
	// Verifier re-checks, against the verify rules, the digests that running containers
	// actually run (their status's imageID): scans that aged past maxAge, attestations
	// replaced by ones with new findings, signatures gone. Nil: verify rules are reported
	// as not verified for every running image they cover.
	Verifier verify.Checker
	// Events, when set, records on each Pod whose running image fails a verify rule.
	Events *telemetry.Events
	// VerifyBudget bounds the registry work of one pass (default 2 minutes): what is not
	// verified by then is reported as not verified, and the next pass tries again.
	VerifyBudget time.Duration
	// Reports, when set, writes the pass's results as OpenReports Reports.
	Reports *Reporter

	wakeOnce sync.Once
	wake     chan struct{}
}

func (a *Auditor) woken() chan struct{} {
	a.wakeOnce.Do(func() { a.wake = make(chan struct{}, 1) })
	return a.wake
}

// WatchNamespaces runs an audit soon after a Namespace's labels change: a namespace relabelled
// into (or out of) a policy's namespaceSelector changes which running Pods break it, and the
// webhook only sees Pods when they are created or updated.
func (a *Auditor) WatchNamespaces(namespaces cache.Informer) error {
	_, err := namespaces.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(before, after any) {
			b, okb := before.(client.Object)
			n, okn := after.(client.Object)
			if okb && okn && !maps.Equal(b.GetLabels(), n.GetLabels()) {
				select {
				case a.woken() <- struct{}{}:
				default:
				}
			}
		},
	})
	return err
}

// NeedLeaderElection is true: one replica audits.
func (a *Auditor) NeedLeaderElection() bool { return true }

// Start runs audits until ctx ends.
func (a *Auditor) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("audit")
	ticker := time.NewTicker(a.Interval)
	defer ticker.Stop()
	for {
		if snap := a.Snapshots.Snapshot(); snap != nil {
			if err := a.Run(ctx, snap); err != nil && ctx.Err() == nil {
				log.Error(err, "Audit failed; retrying at the next interval")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			continue
		case <-a.Snapshots.Changed():
		case <-a.woken():
		}
		// Let a burst of policy or namespace edits settle into one run.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

// Bounds of the audit's registry work: each running digest is verified once per pass, by
// auditParallelism workers that take the namespaces in turn (one namespace's thousand Pods on
// a stalled registry cannot delay the others), each lookup bounded by verifyTimeout and the
// whole by the pass's budget; the verifier's circuit breaker stops calls to a registry that
// keeps failing.
const (
	verifyTimeout       = 30 * time.Second
	defaultVerifyBudget = 2 * time.Minute
	auditParallelism    = 8
)

// auditedPod is a Pod whose decision waits for its running images to be verified.
type auditedPod struct {
	pod *corev1.Pod
	sub policy.Subject
	d   policy.Decision
	// unreached holds the verifications (field|policy) the pass ran out of budget before:
	// reported as not verified, neither counted as refused nor recorded as Events.
	unreached map[string]bool
	// errored holds the verifications (field|policy) that could not be checked: unreached,
	// or failed by the registry or the network rather than by what the image is.
	errored map[string]bool
}

func unreachedKey(field string, p policy.Ref) string { return field + "|" + p.String() }

// ran is the verify.Checker that settles the audited Pods' decisions: it answers from the
// verifications the pass ran, each distinct one once for every Pod that runs it.
type ran struct {
	outcomes map[string]*verify.Outcome
	missing  string // the reason of a verification the pass did not run
}

func verificationKey(pv *policy.Verification) string {
	return pv.Rule.Key + "|" + pv.Repository + "@" + pv.Digest
}

func (r ran) Outcomes(_ context.Context, pending []policy.Verification) []*verify.Outcome {
	out := make([]*verify.Outcome, len(pending))
	for i := range pending {
		if out[i] = r.outcomes[verificationKey(&pending[i])]; out[i] == nil {
			out[i] = &verify.Outcome{Reason: r.missing}
		}
	}
	return out
}

// Resolve is never asked for: the audit checks the digests Pods run, pinning nothing.
func (r ran) Resolve(context.Context, *policy.Unpinned) (string, error) {
	return "", errors.New("the audit pins nothing")
}

// policyAudit collects one policy's result.
type policyAudit struct {
	violations int32
	samples    []v1alpha1.AuditSample
}

// Run audits once with snap and writes the result.
func (a *Auditor) Run(ctx context.Context, snap *policy.Snapshot) error {
	started := time.Now()
	results := map[policy.Ref]*policyAudit{}
	for _, ref := range snap.Refs() {
		results[ref] = &policyAudit{}
	}
	var namespaces metav1.PartialObjectMetadataList
	namespaces.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := a.Cache.List(ctx, &namespaces); err != nil {
		return fmt.Errorf("listing namespaces: %w", err)
	}
	pods := 0
	running := map[string]int{}
	var earliestScanExpiry time.Time
	relying := map[string]int32{} // exception namespace/name -> Pods that need it
	var waiting []*auditedPod     // Pods whose running images are verified below
	var reports *reportBuilder
	if a.Reports != nil {
		reports = newReportBuilder()
	}
	uncertain := map[policy.Ref]int{} // verifications not checked, by policy
	account := func(pod *corev1.Pod, sub *policy.Subject, d *policy.Decision, errored map[string]bool) {
		if reports != nil {
			reports.add(pod, snap.Covering(sub), sub, d, errored)
		}
		for k := range d.Violations {
			if v := &d.Violations[k]; v.Rule == policy.RuleVerify && errored[unreachedKey(v.Field, v.Policy)] {
				uncertain[v.Policy]++
			}
		}
		for _, name := range d.ExceptionNames() {
			relying[name]++
		}
		for k := range d.Violations {
			v := &d.Violations[k]
			r := results[v.Policy]
			if r == nil {
				continue
			}
			if d.FirstOfPolicy(k) {
				r.violations++
			}
			r.samples = append(r.samples, v1alpha1.AuditSample{
				Namespace: pod.Namespace, Pod: pod.Name, Rule: string(v.Rule),
				Container: text.Cut(v.Container, v1alpha1.AuditSampleMaxContainer-3), Image: text.Cut(v.Image, v1alpha1.AuditSampleMaxImage-3),
			})
			if len(r.samples) > 4*AuditSamples {
				r.samples = keepFirst(r.samples)
			}
		}
	}
	for i := range namespaces.Items {
		ns := &namespaces.Items[i]
		if slices.Contains(a.Excluded, ns.Name) {
			continue
		}
		var list corev1.PodList
		if err := a.Cache.List(ctx, &list, client.InNamespace(ns.Name), client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("listing the Pods of %s: %w", ns.Name, err)
		}
		for j := range list.Items {
			pod := &list.Items[j]
			sub, ok := podspec.RunningSubject(pod, ns.Labels)
			if !ok {
				continue
			}
			pods++
			d := snap.Evaluate(&sub)
			if len(d.Pending) > 0 {
				waiting = append(waiting, &auditedPod{pod: pod, sub: sub, d: d})
				continue
			}
			running[telemetry.VerdictUnpinned] += len(d.Unpinned)
			account(pod, &sub, &d, nil)
		}
	}
	earliestScanExpiry = a.verifyRunning(ctx, snap, waiting, running)
	for _, w := range waiting {
		for k := range w.d.Violations {
			if v := &w.d.Violations[k]; v.Rule == policy.RuleVerify && !w.unreached[unreachedKey(v.Field, v.Policy)] {
				a.Events.Running(w.pod, snap, v)
			}
		}
		account(w.pod, &w.sub, &w.d, w.errored)
	}
	finished := time.Now()
	counts := map[string]int{}
	var errs []string
	for ref, r := range results {
		r.samples = keepFirst(r.samples)
		counts[ref.String()] = int(r.violations)
		if err := a.write(ctx, ref, r, finished); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, ref := range snap.ExceptionRefs() {
		if err := a.writeException(ctx, ref, relying[ref.Namespace+"/"+ref.Name], finished); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for ref, generation := range snap.AwaitingCleanAudit() {
		if err := a.writeEnforcement(ctx, ref, generation, results[ref], uncertain[ref], finished); err != nil {
			errs = append(errs, err.Error())
		}
	}
	log := logf.FromContext(ctx).WithName("audit")
	if reports != nil {
		writes, err := a.Reports.Write(ctx, log, reports)
		if err != nil {
			errs = append(errs, err.Error())
		}
		log.V(1).Info("Reports written", "namespaces", len(reports.namespaces), "writes", writes)
	}
	a.Metrics.Audit(counts, pods, finished, finished.Sub(started))
	a.Metrics.RunningImages(running, earliestScanExpiry)
	log.V(1).Info("Audited", "pods", pods, "policies", len(results), "took", finished.Sub(started))
	if len(errs) > 0 {
		return fmt.Errorf("writing the audit's results: %s", strings.Join(errs, "; "))
	}
	return nil
}

// verifyRunning verifies what the waiting Pods' containers run against the verify rules that
// cover them, and settles their decisions: each distinct verification once, fair across
// namespaces, auditParallelism at a time, within the pass's budget. It counts verdicts and
// returns the earliest scan expiry.
func (a *Auditor) verifyRunning(ctx context.Context, snap *policy.Snapshot, waiting []*auditedPod, running map[string]int) time.Time {
	type job struct {
		pv      policy.Verification
		outcome *verify.Outcome
	}
	var jobs []*job
	index := map[string]int{}
	perNamespace := map[string][]int{}
	for _, w := range waiting {
		running[telemetry.VerdictUnpinned] += len(w.d.Unpinned)
		for i := range w.d.Pending {
			pv := &w.d.Pending[i]
			key := verificationKey(pv)
			if _, ok := index[key]; !ok {
				index[key] = len(jobs)
				perNamespace[w.sub.Namespace] = append(perNamespace[w.sub.Namespace], len(jobs))
				jobs = append(jobs, &job{pv: *pv})
			}
		}
	}
	// The namespaces in turn: the first verification of each, then the second of each, ...
	names := slices.Sorted(maps.Keys(perNamespace))
	order := make([]int, 0, len(jobs))
	for round := 0; len(order) < len(jobs); round++ {
		for _, ns := range names {
			if round < len(perNamespace[ns]) {
				order = append(order, perNamespace[ns][round])
			}
		}
	}
	budget := a.VerifyBudget
	if budget <= 0 {
		budget = defaultVerifyBudget
	}
	answers := ran{outcomes: make(map[string]*verify.Outcome, len(jobs)), missing: verify.Unavailable}
	if a.Verifier != nil {
		answers.missing = fmt.Sprintf("not verified in this audit pass: its %v budget for registry work ran out (slow or silent registries); the next pass tries again", budget)
		pass, cancel := context.WithTimeout(ctx, budget)
		defer cancel()
		next := make(chan *job)
		var wg sync.WaitGroup
		for range min(auditParallelism, len(jobs)) {
			wg.Go(func() {
				for j := range next {
					vctx, cancel := context.WithTimeout(verify.WithNamespace(pass, verify.AuditQuota), verifyTimeout)
					j.outcome = a.Verifier.Outcomes(vctx, []policy.Verification{j.pv})[0]
					cancel()
				}
			})
		}
	feed:
		for _, n := range order {
			select {
			case next <- jobs[n]:
			case <-pass.Done():
				break feed
			}
		}
		close(next)
		wg.Wait()
		for _, j := range jobs {
			if j.outcome != nil {
				answers.outcomes[verificationKey(&j.pv)] = j.outcome
			}
		}
	}
	var earliest time.Time
	for _, w := range waiting {
		before := verifyViolations(&w.d)
		r := verify.Decide(ctx, snap, &w.sub, answers, verify.Steps{Verify: true})
		w.d = r.Decision
		unreached := 0
		for _, c := range r.Checked {
			if c.Reason == "" && !c.ScanExpires.IsZero() && (earliest.IsZero() || c.ScanExpires.Before(earliest)) {
				earliest = c.ScanExpires
			}
			if a.Verifier != nil && c.Reason == answers.missing {
				if w.unreached == nil {
					w.unreached = map[string]bool{}
				}
				w.unreached[unreachedKey(c.Image.Field, c.Rule.Policy)] = true
				unreached++
			}
			if c.Reason == answers.missing || c.Transient() {
				if w.errored == nil {
					w.errored = map[string]bool{}
				}
				w.errored[unreachedKey(c.Image.Field, c.Rule.Policy)] = true
			}
		}
		// Settling adds one violation per failure that no exception's ignores lifted.
		failed := verifyViolations(&w.d) - before
		running[telemetry.VerdictUnverified] += unreached
		running[telemetry.VerdictRefused] += max(failed-unreached, 0)
		running[telemetry.VerdictVerified] += len(r.Checked) - failed
	}
	return earliest
}

func verifyViolations(d *policy.Decision) int {
	n := 0
	for k := range d.Violations {
		if d.Violations[k].Rule == policy.RuleVerify {
			n++
		}
	}
	return n
}

// keepFirst sorts samples by namespace, Pod, container and rule and keeps the first
// AuditSamples, so that a cluster always shows the same sample.
func keepFirst(s []v1alpha1.AuditSample) []v1alpha1.AuditSample {
	slices.SortFunc(s, func(x, y v1alpha1.AuditSample) int {
		for _, c := range [][2]string{{x.Namespace, y.Namespace}, {x.Pod, y.Pod}, {x.Container, y.Container}, {x.Rule, y.Rule}, {x.Image, y.Image}} {
			if n := strings.Compare(c[0], c[1]); n != 0 {
				return n
			}
		}
		return 0
	})
	s = slices.Compact(s)
	if len(s) > AuditSamples {
		s = s[:AuditSamples]
	}
	return s
}

// write merge-patches status.audit alone, leaving the conditions to the PolicyReconciler.
func (a *Auditor) write(ctx context.Context, ref policy.Ref, r *policyAudit, at time.Time) error {
	status := v1alpha1.AuditStatus{Violations: r.violations, LastScanTime: metav1.NewTime(at), Samples: r.samples}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"audit": status}})
	if err != nil {
		return err
	}
	var obj client.Object = &v1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: ref.Name}}
	if ref.Kind == policy.KindImagePolicy {
		obj = &v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace}}
	}
	if err := a.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil
		}
		return fmt.Errorf("%s: %w", ref, err)
	}
	return nil
}

// writeEnforcement writes status.enforcement of a policy that waits for a clean audit: Enforce
// when the pass found no running Pod it would refuse and checked every image it covers, Audit
// (still waiting) otherwise. It writes only what changed.
func (a *Auditor) writeEnforcement(ctx context.Context, ref policy.Ref, generation int64, r *policyAudit, uncertain int, at time.Time) error {
	var obj client.Object = &v1alpha1.ClusterImagePolicy{}
	if ref.Kind == policy.KindImagePolicy {
		obj = &v1alpha1.ImagePolicy{}
	}
	if err := a.Cache.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if obj.GetGeneration() != generation {
		return nil // a newer spec: the next pass judges it
	}
	var status *v1alpha1.ImagePolicyStatus
	switch p := obj.(type) {
	case *v1alpha1.ClusterImagePolicy:
		status = &p.Status
	case *v1alpha1.ImagePolicy:
		status = &p.Status
	}
	want := v1alpha1.EnforcementStatus{Mode: v1alpha1.ModeEnforce, Reason: v1alpha1.ReasonCleanAudit, ObservedGeneration: generation}
	var violations int32
	if r != nil {
		violations = r.violations
	}
	switch {
	case violations == 0 && uncertain == 0:
		want.Message = fmt.Sprintf("the audit pass of %s found no running Pod that the policy refuses: it refuses from then on", at.UTC().Format(time.RFC3339))
	default:
		want.Mode, want.Reason = v1alpha1.ModeAudit, v1alpha1.ReasonAwaitingCleanAudit
		var parts []string
		if violations > 0 {
			parts = append(parts, fmt.Sprintf("%d running Pods that it would refuse", violations))
			if len(r.samples) > 0 {
				first := r.samples[0]
				parts[0] += fmt.Sprintf(" (%s/%s: %s)", first.Namespace, first.Pod, first.Rule)
			}
		}
		if uncertain > 0 {
			parts = append(parts, fmt.Sprintf("%d running images that it could not verify", uncertain))
		}
		// No time in it: the same finding pass after pass is the same message, and no write.
		want.Message = "acting as Audit until an audit pass finds no running Pod that the policy would refuse; the latest pass found " +
			strings.Join(parts, " and ") + " (status.audit lists them, with the time of that pass)"
	}
	want.LastTransitionTime = metav1.NewTime(at)
	if cur := status.Enforcement; cur != nil && cur.ObservedGeneration == generation {
		if cur.Mode == v1alpha1.ModeEnforce {
			return nil // a clean pass of this spec was found: it stays in force
		}
		if cur.Message == want.Message {
			return nil // the same finding as the previous pass: no write per pass
		}
		if cur.Mode == want.Mode {
			want.LastTransitionTime = cur.LastTransitionTime
		}
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"enforcement": want}})
	if err != nil {
		return err
	}
	if err := a.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	return nil
}

// writeException merge-patches an exception's status.pods and lastAuditTime.
func (a *Auditor) writeException(ctx context.Context, ref policy.Ref, pods int32, at time.Time) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"pods": pods, "lastAuditTime": metav1.NewTime(at)}})
	if err != nil {
		return err
	}
	obj := &v1alpha1.ImagePolicyException{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace}}
	if err := a.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil
		}
		return fmt.Errorf("%s: %w", ref, err)
	}
	return nil
}
