package controller

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	reportsv1alpha1 "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/text"
)

// +kubebuilder:rbac:groups=openreports.io,resources=reports,verbs=get;list;create;update;delete

// Reports are OpenReports (openreports.io/v1alpha1) Reports, one per namespace, named
// ReportName, with source ReportSource: what Policy Reporter and the other report readers
// show.
const (
	ReportName   = "imagegate"
	ReportSource = "imagegate"
	// reportManagedBy labels the Reports imagegate writes, so that a new leader finds them.
	reportManagedBy = "imagegate"
)

// Bounds of one Report, far below etcd's 1.5 MiB request limit: at most reportMaxResults
// results and reportMaxBytes of them in JSON (the most severe kept first; the summary counts
// them all), each message and property value cut to reportMaxText characters.
const (
	reportMaxResults = 1000
	reportMaxBytes   = 512 << 10
	reportMaxText    = 1024
)

// The results' words, as OpenReports spells them.
const (
	resultPass  reportsv1alpha1.Result = "pass"
	resultFail  reportsv1alpha1.Result = "fail"
	resultWarn  reportsv1alpha1.Result = "warn"
	resultError reportsv1alpha1.Result = "error"
	resultSkip  reportsv1alpha1.Result = "skip"
)

// severity orders results, the most severe first: what a Report keeps when it is full.
var severity = map[reportsv1alpha1.Result]int{resultFail: 0, resultError: 1, resultWarn: 2, resultSkip: 3, resultPass: 4}

// reportEntry is one result and its identity across passes.
type reportEntry struct {
	key    string
	result reportsv1alpha1.ReportResult
}

// reportBuilder collects one audit pass's results, by namespace.
type reportBuilder struct {
	namespaces map[string]*reportNamespace
}

func newReportBuilder() *reportBuilder {
	return &reportBuilder{namespaces: map[string]*reportNamespace{}}
}

// reportNamespace is the results of one namespace, by key. The audit keeps a namespace's
// results from one pass to the next while nothing they depend on changed: the Reporter then
// knows the Report it wrote from them is current without building it again.
type reportNamespace struct {
	entries map[string]*reportEntry
}

func (n *reportNamespace) clone() *reportNamespace {
	return &reportNamespace{entries: maps.Clone(n.entries)}
}

// reportSubject is what a Pod's results are reported on: its workload (a Deployment, a
// StatefulSet, a DaemonSet, a Job...), whose Pods share one template and so one verdict, or
// the Pod itself when nothing controls it. Reporting by workload keeps one result per
// workload however many replicas it has, and keeps Reports still when Pods are replaced (a
// rollout, a reschedule or a node drain renames every Pod, but not its workload).
func reportSubject(pod *podspec.Running) corev1.ObjectReference {
	owner := pod.Controller()
	if owner == nil {
		return corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	}
	// A Deployment's ReplicaSets are named <deployment>-<pod-template-hash>, the label its
	// Pods carry: the Deployment is found without watching ReplicaSets.
	if owner.Kind == "ReplicaSet" && owner.APIVersion == "apps/v1" {
		if hash := pod.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(owner.Name, "-"+hash) {
			return corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: pod.Namespace, Name: strings.TrimSuffix(owner.Name, "-"+hash)}
		}
	}
	return corev1.ObjectReference{APIVersion: owner.APIVersion, Kind: owner.Kind, Namespace: pod.Namespace, Name: owner.Name, UID: owner.UID}
}

// policyName is how a result names its policy: a ClusterImagePolicy by name, an ImagePolicy
// by namespace/name (the properties say which kind).
func policyName(ref policy.Ref) string {
	if ref.Namespace == "" {
		return ref.Name
	}
	return ref.Namespace + "/" + ref.Name
}

// add records the results of one audited Pod: per policy that covers it, pass, or one
// result per violation (fail in Enforce and Audit, warn in Warn, error when its image could
// not be verified) and per exemption (skip). errored holds field|policy of the verifications
// that could not be checked.
func (n *reportNamespace) add(pod *podspec.Running, covering []policy.Ref, sub *policy.Subject, d *policy.Decision, errored map[string]bool) {
	if n == nil {
		return
	}
	subject := reportSubject(pod)
	entries := n.entries
	// What a result says of the image a violation is about.
	about := func(v *policy.Violation) map[string]string {
		props := map[string]string{"mode": string(v.Mode)}
		if v.Field != "" {
			props["field"] = v.Field
		}
		if v.Container != "" {
			props["container"] = v.Container
		}
		if v.Image != "" {
			props["image"] = policy.Printable(v.Image)
		}
		for i := range sub.Images {
			if sub.Images[i].Field == v.Field && sub.Images[i].Running != "" {
				props["digest"] = sub.Images[i].Running
			}
		}
		return props
	}
	put := func(ref policy.Ref, rule policy.Rule, result reportsv1alpha1.Result, message string, props map[string]string) {
		props["policyKind"] = ref.Kind
		r := reportsv1alpha1.ReportResult{
			Source: ReportSource, Policy: policyName(ref), Rule: string(rule), Category: "Images",
			Result: result, Scored: true, Subjects: []corev1.ObjectReference{subject},
			Description: text.Cut(message, reportMaxText), Properties: props,
		}
		for k, v := range props {
			props[k] = text.Cut(v, reportMaxText)
		}
		key := resultKey(&r)
		if _, ok := entries[key]; !ok {
			entries[key] = &reportEntry{key: key, result: r}
		}
	}
	broken := map[policy.Ref]bool{}
	for i := range d.Violations {
		v := &d.Violations[i]
		broken[v.Policy] = true
		props := about(v)
		result := resultFail
		switch {
		case v.Rule == policy.RuleVerify && errored[unreachedKey(v.Field, v.Policy)]:
			result = resultError
		case v.Mode == v1alpha1.ModeWarn:
			result = resultWarn
			if v.BreakGlass {
				props["breakGlass"] = "true"
			}
		}
		put(v.Policy, v.Rule, result, v.Message(), props)
	}
	for i := range d.Exempted {
		e := &d.Exempted[i]
		v := &e.Violation
		broken[v.Policy] = true
		props := about(v)
		props["exception"] = e.Exception.Namespace + "/" + e.Exception.Name
		put(v.Policy, v.Rule, resultSkip, e.Message(), props)
	}
	for _, ref := range covering {
		if !broken[ref] {
			put(ref, "", resultPass, fmt.Sprintf("the Pod's images meet %s %q", ref.Kind, ref.Name), map[string]string{})
		}
	}
}

// resultKey identifies a result across passes (everything but its timestamp).
func resultKey(r *reportsv1alpha1.ReportResult) string {
	var b strings.Builder
	for _, s := range []string{r.Policy, r.Rule, string(r.Result), r.Description} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	for _, s := range r.Subjects {
		b.WriteString(s.Kind + "/" + s.Name)
		b.WriteByte(0)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Properties)) {
		b.WriteString(k + "=" + r.Properties[k])
		b.WriteByte(0)
	}
	return b.String()
}

// Reporter writes the audit's results as OpenReports Reports, one per namespace, only when
// they change: a pass that finds what the previous one found writes nothing. It runs on the
// leader, in the audit.
type Reporter struct {
	// Client writes the Reports; Reader reads them once per leadership, to learn what
	// a previous leader wrote (uncached: the manager's API reader).
	Client client.Client
	Reader client.Reader
	// Metrics may be nil.
	Metrics *telemetry.Metrics
	// Now stamps new results; nil: time.Now.
	Now func() time.Time

	seeded  bool
	enabled *bool
	written map[string]*writtenReport
}

// writtenReport is what a namespace's Report holds, as last written or read.
type writtenReport struct {
	// from is the results it was last built from, when this leader built it.
	from   *reportNamespace
	hash   string
	stamps map[string]metav1.Timestamp // when each result was first reported
}

// errReportsUnavailable says the openreports.io CRDs are not installed.
var errReportsUnavailable = errors.New("the openreports.io/v1alpha1 Report CRD is not installed")

// available checks that the Report kind is served, logging and recording each change.
func (r *Reporter) available(log logr.Logger) bool {
	_, err := r.Client.RESTMapper().RESTMapping(reportsv1alpha1.SchemeGroupVersion.WithKind("Report").GroupKind(), reportsv1alpha1.SchemeGroupVersion.Version)
	ok := err == nil
	if r.enabled == nil || *r.enabled != ok {
		if ok {
			log.Info("Writing OpenReports Reports (openreports.io/v1alpha1), one per namespace")
		} else {
			log.Info("Reports are on (--reports) but not written: "+errReportsUnavailable.Error()+"; install it (the Helm chart's reports.installCRDs) and they start at the next audit pass", "error", err.Error())
			r.seeded = false
		}
		r.enabled = &ok
	}
	r.Metrics.Reports(ok)
	return ok
}

// Write brings every namespace's Report in line with b, writing only what changed, and
// returns how many writes it made.
func (r *Reporter) Write(ctx context.Context, log logr.Logger, b *reportBuilder) (int, error) {
	if !r.available(log) {
		return 0, nil
	}
	if !r.seeded {
		if err := r.seed(ctx); err != nil {
			return 0, err
		}
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	stamp := metav1.Timestamp{Seconds: now().Unix()}
	writes := 0
	var errs []error
	namespaces := slices.Sorted(maps.Keys(b.namespaces))
	for _, ns := range slices.Sorted(maps.Keys(r.written)) {
		if _, ok := b.namespaces[ns]; !ok {
			namespaces = append(namespaces, ns)
		}
	}
	for _, ns := range namespaces {
		results := b.namespaces[ns]
		prev := r.written[ns]
		if results == nil || len(results.entries) == 0 {
			if prev == nil {
				continue
			}
			// Nothing to report in the namespace any more: its Report goes.
			err := r.Client.Delete(ctx, &reportsv1alpha1.Report{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ReportName}})
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting the Report of %s: %w", ns, err))
				continue
			}
			delete(r.written, ns)
			writes++
			r.Metrics.ReportWrite("delete")
			continue
		}
		if prev != nil && prev.from == results {
			continue // written from these very results
		}
		report, want := buildReport(ns, results.entries, prev, stamp)
		want.from = results
		if prev != nil && prev.hash == want.hash {
			prev.from = results
			continue
		}
		op, err := r.put(ctx, report)
		if err != nil {
			errs = append(errs, fmt.Errorf("writing the Report of %s: %w", ns, err))
			continue
		}
		r.written[ns] = want
		writes++
		r.Metrics.ReportWrite(op)
	}
	return writes, errors.Join(errs...)
}

// seed reads the Reports a previous leader wrote, so that this one rewrites only what
// changed since.
func (r *Reporter) seed(ctx context.Context) error {
	r.written = map[string]*writtenReport{}
	var list reportsv1alpha1.ReportList
	if err := r.Reader.List(ctx, &list, client.MatchingLabels{"app.kubernetes.io/managed-by": reportManagedBy}); err != nil {
		if meta.IsNoMatchError(err) {
			return nil
		}
		return fmt.Errorf("listing the Reports written before: %w", err)
	}
	for i := range list.Items {
		rep := &list.Items[i]
		if rep.Name != ReportName {
			continue
		}
		w := &writtenReport{stamps: map[string]metav1.Timestamp{}}
		for j := range rep.Results {
			w.stamps[resultKey(&rep.Results[j])] = rep.Results[j].Timestamp
		}
		w.hash = contentHash(rep)
		r.written[rep.Namespace] = w
	}
	r.seeded = true
	return nil
}

// buildReport makes a namespace's Report from its results: the most severe first, within the
// Report's bounds, each stamped with when it was first reported.
func buildReport(ns string, entries map[string]*reportEntry, prev *writtenReport, now metav1.Timestamp) (*reportsv1alpha1.Report, *writtenReport) {
	list := slices.Collect(maps.Values(entries))
	slices.SortFunc(list, func(a, b *reportEntry) int {
		return cmp.Or(cmp.Compare(severity[a.result.Result], severity[b.result.Result]), strings.Compare(a.key, b.key))
	})
	rep := &reportsv1alpha1.Report{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: ReportName,
			Labels: map[string]string{"app.kubernetes.io/managed-by": reportManagedBy},
		},
		Source: ReportSource,
	}
	w := &writtenReport{stamps: map[string]metav1.Timestamp{}}
	size, omitted := 0, 0
	for _, e := range list {
		switch e.result.Result {
		case resultPass:
			rep.Summary.Pass++
		case resultFail:
			rep.Summary.Fail++
		case resultWarn:
			rep.Summary.Warn++
		case resultError:
			rep.Summary.Error++
		case resultSkip:
			rep.Summary.Skip++
		}
		raw, _ := json.Marshal(&e.result)
		if len(rep.Results) >= reportMaxResults || size+len(raw) > reportMaxBytes {
			omitted++
			continue
		}
		size += len(raw)
		res := e.result
		res.Timestamp = now
		if prev != nil {
			if t, ok := prev.stamps[e.key]; ok {
				res.Timestamp = t
			}
		}
		w.stamps[e.key] = res.Timestamp
		rep.Results = append(rep.Results, res)
	}
	if omitted > 0 {
		rep.Annotations = map[string]string{ResultsOmittedAnnotation: strconv.Itoa(omitted)}
	}
	w.hash = contentHash(rep)
	return rep, w
}

// ResultsOmittedAnnotation counts the results a full Report leaves out (the least severe:
// passes first); its summary still counts them.
const ResultsOmittedAnnotation = "imagegate.io/results-omitted"

// contentHash is what decides whether a Report must be written: its results (timestamps
// aside), summary and omitted count.
func contentHash(rep *reportsv1alpha1.Report) string {
	h := sha256.New()
	for i := range rep.Results {
		h.Write([]byte(resultKey(&rep.Results[i])))
		h.Write([]byte{1})
	}
	_, _ = fmt.Fprintf(h, "%+v|%s", rep.Summary, rep.Annotations[ResultsOmittedAnnotation])
	return hex.EncodeToString(h.Sum(nil))
}

// put creates the Report, or replaces the one there.
func (r *Reporter) put(ctx context.Context, report *reportsv1alpha1.Report) (string, error) {
	err := r.Client.Create(ctx, report)
	if err == nil {
		return "create", nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	var current reportsv1alpha1.Report
	if err := r.Reader.Get(ctx, client.ObjectKeyFromObject(report), &current); err != nil {
		return "", err
	}
	report.ResourceVersion = current.ResourceVersion
	return "update", r.Client.Update(ctx, report)
}
