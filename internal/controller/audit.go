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
	// Cache lists Namespaces and reads policies (the manager's cache).
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
	// Pods lists the Pods to audit and tells which namespaces' Pods changed (the manager's
	// podcache.Cache).
	Pods PodSource
	// Now is the clock of the passes, which must be the snapshots' (exceptions expire by
	// it); nil: time.Now.
	Now func() time.Time

	memo auditMemo

	wakeOnce sync.Once
	wake     chan struct{}
}

// PodSource lists the Pods of a namespace, and follows which namespaces' Pods change
// (podcache.Cache; podcache.Reader knows no changes).
type PodSource interface {
	Pods(ctx context.Context, namespace string) ([]*podspec.Running, error)
	// Follow returns take, which returns the namespaces whose Pods changed since its previous
	// call (nil: possibly all).
	Follow() (take func() map[string]bool)
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
	pod *podspec.Running
	sub policy.Subject
	// first is the decision before verification: its Pending verifications are run at every
	// pass (scans age, signatures go), while it is kept.
	first policy.Decision
	// d is this pass's decision, verifications settled.
	d policy.Decision
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

// tally is what Pods add to a pass: violations and samples by policy, the Pods that need each
// exception, the verifications not checked by policy, the Report results, the images
// pinned nowhere.
type tally struct {
	pods      int
	unpinned  int
	results   map[policy.Ref]*policyAudit
	relying   map[string]int32 // exception namespace/name -> Pods that need it
	uncertain map[policy.Ref]int
}

func newTally() *tally {
	return &tally{results: map[policy.Ref]*policyAudit{}, relying: map[string]int32{}, uncertain: map[policy.Ref]int{}}
}

// account adds one judged Pod.
func (t *tally) account(pod *podspec.Running, d *policy.Decision, errored map[string]bool) {
	for k := range d.Violations {
		if v := &d.Violations[k]; v.Rule == policy.RuleVerify && errored[unreachedKey(v.Field, v.Policy)] {
			t.uncertain[v.Policy]++
		}
	}
	for _, name := range d.ExceptionNames() {
		t.relying[name]++
	}
	for k := range d.Violations {
		v := &d.Violations[k]
		r := t.results[v.Policy]
		if r == nil {
			r = &policyAudit{}
			t.results[v.Policy] = r
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

// merge adds o to t.
func (t *tally) merge(o *tally) {
	t.pods += o.pods
	t.unpinned += o.unpinned
	for ref, r := range o.results {
		m := t.results[ref]
		if m == nil {
			m = &policyAudit{}
			t.results[ref] = m
		}
		m.violations += r.violations
		m.samples = append(m.samples, r.samples...)
		if len(m.samples) > 4*AuditSamples {
			m.samples = keepFirst(m.samples)
		}
	}
	for name, n := range o.relying {
		t.relying[name] += n
	}
	for ref, n := range o.uncertain {
		t.uncertain[ref] += n
	}
}

// namespaceAudit is one namespace's part of a pass: the tally and Report results of its
// Pods that wait for no verification, and those that do. The audit keeps it for the next
// passes while its Pods, its labels, the policies and the exceptions in force stay the same:
// then only the waiting Pods' images are verified again. A pass over 150,000 unchanged Pods
// is a sum over namespaces.
type namespaceAudit struct {
	labels  map[string]string
	settled *tally
	report  *reportNamespace
	waiting []*auditedPod
}

// judgeNamespace judges the Pods of one namespace.
func (a *Auditor) judgeNamespace(ctx context.Context, snap *policy.Snapshot, ns *metav1.PartialObjectMetadata, reports bool) (*namespaceAudit, error) {
	pods, err := a.Pods.Pods(ctx, ns.Name)
	if err != nil {
		return nil, fmt.Errorf("listing the Pods of %s: %w", ns.Name, err)
	}
	out := &namespaceAudit{labels: ns.Labels, settled: newTally()}
	if reports {
		out.report = &reportNamespace{entries: map[string]*reportEntry{}}
	}
	for _, pod := range pods {
		sub, ok := pod.Subject(ns.Labels)
		if !ok {
			continue
		}
		out.settled.pods++
		d := snap.Evaluate(&sub)
		if len(d.Pending) > 0 {
			out.waiting = append(out.waiting, &auditedPod{pod: pod, sub: sub, first: d})
			continue
		}
		out.settled.unpinned += len(d.Unpinned)
		out.settled.account(pod, &d, nil)
		out.report.add(pod, snap.Covering(&sub), &sub, &d, nil)
	}
	for _, r := range out.settled.results {
		r.samples = keepFirst(r.samples)
	}
	return out, nil
}

// auditMemo is what the audit keeps between passes.
type auditMemo struct {
	snap       *policy.Snapshot
	at         time.Time
	reports    bool
	namespaces map[string]*namespaceAudit
	// take returns the namespaces whose Pods changed since the previous pass (nil: all).
	take func() map[string]bool
}

// Run audits once with snap and writes the result. It judges again only the namespaces
// whose Pods or labels changed since the previous pass, all of them when the policies or the
// exceptions in force changed, and verifies again the running images of every Pod that a
// verify rule covers.
func (a *Auditor) Run(ctx context.Context, snap *policy.Snapshot) error {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	started := now()
	res, err := a.pass(ctx, snap, started)
	if err != nil {
		return err
	}
	total, reports := res.total, res.reports
	for _, w := range res.waiting {
		for k := range w.d.Violations {
			if v := &w.d.Violations[k]; v.Rule == policy.RuleVerify && !w.unreached[unreachedKey(v.Field, v.Policy)] {
				a.Events.Running(w.pod, snap, v, runningDigest(w.pod, v.Field))
			}
		}
	}
	finished := now()
	counts := map[string]int{}
	var errs []string
	for _, ref := range snap.Refs() {
		r := total.results[ref]
		if r == nil {
			r = &policyAudit{}
		}
		r.samples = keepFirst(r.samples)
		counts[ref.String()] = int(r.violations)
		if err := a.write(ctx, ref, r, finished); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, ref := range snap.ExceptionRefs() {
		if err := a.writeException(ctx, ref, total.relying[ref.Namespace+"/"+ref.Name], finished); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for ref, generation := range snap.AwaitingCleanAudit() {
		if err := a.writeEnforcement(ctx, ref, generation, total.results[ref], total.uncertain[ref], finished); err != nil {
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
	a.Metrics.Audit(counts, total.pods, finished, finished.Sub(started))
	a.Metrics.RunningImages(res.running, res.earliest)
	log.V(1).Info("Audited", "pods", total.pods, "policies", len(counts), "namespacesJudged", res.judged, "verified", len(res.waiting), "took", finished.Sub(started))
	if len(errs) > 0 {
		return fmt.Errorf("writing the audit's results: %s", strings.Join(errs, "; "))
	}
	return nil
}

// passResult is what one pass found.
type passResult struct {
	total    *tally
	reports  *reportBuilder
	running  map[string]int // running images by verdict
	earliest time.Time      // the earliest scan expiry
	waiting  []*auditedPod  // the Pods whose running images were verified
	judged   int            // namespaces judged (the others' verdicts were kept)
}

// pass judges what changed since the previous pass and verifies the running images.
func (a *Auditor) pass(ctx context.Context, snap *policy.Snapshot, started time.Time) (*passResult, error) {
	m := &a.memo
	if m.take == nil {
		m.take = a.Pods.Follow()
	}
	changed := m.take()
	if m.snap != snap || m.reports != (a.Reports != nil) || exceptionsChanged(snap, m.at, started) {
		m.namespaces = nil
	}
	m.snap, m.at, m.reports = snap, started, a.Reports != nil
	var namespaces metav1.PartialObjectMetadataList
	namespaces.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := a.Cache.List(ctx, &namespaces); err != nil {
		m.snap = nil // the changes taken are lost: judge everything next time
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	total := newTally()
	var waiting []*auditedPod // Pods whose running images are verified below
	var reports *reportBuilder
	if a.Reports != nil {
		reports = newReportBuilder()
	}
	kept := make(map[string]*namespaceAudit, len(namespaces.Items))
	judged := 0
	for i := range namespaces.Items {
		ns := &namespaces.Items[i]
		if slices.Contains(a.Excluded, ns.Name) {
			continue
		}
		n := m.namespaces[ns.Name]
		if n == nil || changed == nil || changed[ns.Name] || !maps.Equal(n.labels, ns.Labels) {
			var err error
			if n, err = a.judgeNamespace(ctx, snap, ns, reports != nil); err != nil {
				m.snap = nil
				return nil, err
			}
			judged++
		}
		kept[ns.Name] = n
		total.merge(n.settled)
		waiting = append(waiting, n.waiting...)
		if reports != nil {
			reports.namespaces[ns.Name] = n.report
		}
	}
	m.namespaces = kept
	running := map[string]int{telemetry.VerdictUnpinned: total.unpinned}
	earliestScanExpiry := a.verifyRunning(ctx, snap, waiting, running)
	for _, w := range waiting {
		total.account(w.pod, &w.d, w.errored)
		if reports != nil {
			rn := reports.namespaces[w.pod.Namespace]
			if rn == kept[w.pod.Namespace].report {
				rn = rn.clone() // the kept results stay as judged
				reports.namespaces[w.pod.Namespace] = rn
			}
			rn.add(w.pod, snap.Covering(&w.sub), &w.sub, &w.d, w.errored)
		}
	}
	return &passResult{total: total, reports: reports, running: running, earliest: earliestScanExpiry, waiting: waiting, judged: judged}, nil
}

// exceptionsChanged reports whether an exception of snap came into force or ended between
// since and now: verdicts judged before then may be stale.
func exceptionsChanged(snap *policy.Snapshot, since, now time.Time) bool {
	next := snap.NextExceptionChange(since)
	return !next.IsZero() && !next.After(now)
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
		running[telemetry.VerdictUnpinned] += len(w.first.Unpinned)
		for i := range w.first.Pending {
			pv := &w.first.Pending[i]
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
		before := verifyViolations(&w.first)
		w.unreached, w.errored = nil, nil
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

// runningDigest is the digest the container of the image at field runs, "" when its status
// does not say.
func runningDigest(pod *podspec.Running, field string) string {
	for i := range pod.Images {
		if pod.Images[i].Field == field {
			return pod.Images[i].Running
		}
	}
	return ""
}
