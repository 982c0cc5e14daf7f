// Package telemetry records what the admission endpoints and the audit decide: Prometheus
// metrics on the manager's metrics endpoint, and rate-limited Kubernetes Events on the
// policies that deny or warn. Every method is safe on a nil receiver, which records nothing.
package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/internal/policy"
)

// Endpoint names what decided: the Pod webhook, the workload webhook or the ImageReview
// endpoint.
type Endpoint string

// The endpoints.
const (
	EndpointPod         Endpoint = "pod"
	EndpointWorkload    Endpoint = "workload"
	EndpointImageReview Endpoint = "imagereview"
)

// Metrics are imagegate's Prometheus collectors.
type Metrics struct {
	decisions       *prometheus.CounterVec
	dryRuns         *prometheus.CounterVec
	violations      *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	generation      prometheus.Gauge
	policies        *prometheus.GaugeVec
	auditViolations *prometheus.GaugeVec
	auditLastRun    prometheus.Gauge
	auditDuration   prometheus.Gauge
	auditPods       prometheus.Gauge
	runningImages   *prometheus.GaugeVec
	scanExpiry      prometheus.Gauge
	exceptions      *prometheus.GaugeVec
	exceptionExpiry *prometheus.GaugeVec
	reportsEnabled  prometheus.Gauge
	reportWrites    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_admission_decisions_total",
			Help: "Admission decisions, by endpoint (pod, workload, imagereview) and decision (allowed, allowed-with-warnings, allowed-with-audit-violations, allowed-by-break-glass, denied).",
		}, []string{"endpoint", "decision"}),
		dryRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_admission_dry_run_decisions_total",
			Help: "Decisions about dry-run requests (kubectl --dry-run=server), which persist nothing, by endpoint and decision; not in imagegate_admission_decisions_total.",
		}, []string{"endpoint", "decision"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_policy_violations_total",
			Help: "Admission requests in which a policy found violations, by endpoint, policy (Kind/[namespace/]name) and mode (Enforce denied, Warn warned, Audit recorded).",
		}, []string{"endpoint", "policy", "mode"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imagegate_evaluation_duration_seconds",
			Help: "Time to decide one admission request with the policy snapshot, by endpoint (decoding excluded; registry checks of verify rules included).",
			// 1 µs to 16.8 s: name rules take microseconds, a cold signature check seconds.
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 13),
		}, []string{"endpoint"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagegate_policy_snapshot_generation",
			Help: "How many policy snapshots this replica has compiled; it grows by one per policy change.",
		}),
		policies: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imagegate_policies",
			Help: "Policies in the current snapshot, by state: ready, or invalid (compile errors: the policy refuses every Pod it may cover).",
		}, []string{"state"}),
		auditViolations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imagegate_audit_violating_pods",
			Help: "Pods that break a policy, by policy, as of the latest background audit.",
		}, []string{"policy"}),
		auditLastRun: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagegate_audit_last_run_timestamp_seconds",
			Help: "When the latest background audit finished (Unix time).",
		}),
		auditDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagegate_audit_duration_seconds",
			Help: "How long the latest background audit took.",
		}),
		auditPods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagegate_audit_pods",
			Help: "Pods the latest background audit evaluated.",
		}),
	}
	m.runningImages = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imagegate_audit_running_images",
		Help: "Images of running containers that verify rules cover, by verdict (verified, refused: signature, attestation or scan failed, or the container runs another digest than its spec names; unpinned: neither the spec nor the status names a digest), as of the latest background audit.",
	}, []string{"verdict"})
	m.scanExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imagegate_audit_earliest_scan_expiry_timestamp_seconds",
		Help: "The earliest time (Unix) at which the vulnerability scan of a running, verified image reaches its policy's maxAge, as of the latest background audit; 0 when none has a maxAge. Alert before it: from then on Pods of that image are refused and the audit reports the running ones.",
	})
	m.exceptions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imagegate_exceptions",
		Help: "ImagePolicyExceptions by state: Active, ExpiringSoon (within --exception-expiry-warning), Expired, Forbidden (every policy named sets allowExceptions: false), Invalid.",
	}, []string{"state"})
	m.exceptionExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imagegate_exception_expiry_timestamp_seconds",
		Help: "When each ImagePolicyException with an expiresAt expires (Unix time), by exception (namespace/name).",
	}, []string{"exception"})
	m.reportsEnabled = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imagegate_reports_enabled",
		Help: "1 when the audit writes OpenReports Reports (--reports, and the openreports.io CRDs installed), 0 when --reports is set but the CRDs are missing; absent without --reports.",
	})
	m.reportWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagegate_report_writes_total",
		Help: "Writes of OpenReports Reports by the audit, by operation (create, update, delete): a Report is written only when its results change.",
	}, []string{"operation"})
	for _, c := range []prometheus.Collector{m.decisions, m.dryRuns, m.violations, m.latency, m.generation, m.policies, m.auditViolations, m.auditLastRun, m.auditDuration, m.auditPods, m.runningImages, m.scanExpiry, m.exceptions, m.exceptionExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Decision records one admission decision and how long it took.
func (m *Metrics) Decision(endpoint Endpoint, d *policy.Decision, elapsed time.Duration) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(string(endpoint), d.Outcome()).Inc()
	m.latency.WithLabelValues(string(endpoint)).Observe(elapsed.Seconds())
	for i := range d.Violations {
		v := &d.Violations[i]
		if d.FirstOfPolicy(i) {
			m.violations.WithLabelValues(string(endpoint), v.Policy.String(), string(v.Mode)).Inc()
		}
	}
}

// DryRun records one decision about a dry-run request and how long it took.
func (m *Metrics) DryRun(endpoint Endpoint, d *policy.Decision, elapsed time.Duration) {
	if m == nil {
		return
	}
	m.dryRuns.WithLabelValues(string(endpoint), d.Outcome()).Inc()
	m.latency.WithLabelValues(string(endpoint)).Observe(elapsed.Seconds())
}

// Snapshot records a newly compiled snapshot.
func (m *Metrics) Snapshot(generation int64, s *policy.Snapshot) {
	if m == nil {
		return
	}
	m.generation.Set(float64(generation))
	m.policies.WithLabelValues("ready").Set(float64(s.Len() - s.Invalid()))
	m.policies.WithLabelValues("invalid").Set(float64(s.Invalid()))
}

// Audit records the result of one background audit: the violating Pods per policy (policies
// absent from counts have none), the Pods evaluated and the time it took.
func (m *Metrics) Audit(counts map[string]int, pods int, finished time.Time, took time.Duration) {
	if m == nil {
		return
	}
	m.auditViolations.Reset()
	for p, n := range counts {
		m.auditViolations.WithLabelValues(p).Set(float64(n))
	}
	m.auditPods.Set(float64(pods))
	m.auditLastRun.Set(float64(finished.Unix()))
	m.auditDuration.Set(took.Seconds())
}

// Verdicts of running images.
const (
	VerdictVerified = "verified"
	VerdictRefused  = "refused"
	VerdictUnpinned = "unpinned"
	// VerdictUnverified: the audit pass's budget for registry work ran out before it.
	VerdictUnverified = "unverified"
)

// RunningImages records, after an audit, the running images verify rules cover by verdict and
// the earliest time a verified image's scan expires (zero: none).
func (m *Metrics) RunningImages(verdicts map[string]int, earliestScanExpiry time.Time) {
	if m == nil {
		return
	}
	for _, v := range []string{VerdictVerified, VerdictRefused, VerdictUnpinned, VerdictUnverified} {
		m.runningImages.WithLabelValues(v).Set(float64(verdicts[v]))
	}
	if earliestScanExpiry.IsZero() {
		m.scanExpiry.Set(0)
		return
	}
	m.scanExpiry.Set(float64(earliestScanExpiry.Unix()))
}

// RegisterReports registers the report metrics (only when reports are asked for).
func (m *Metrics) RegisterReports(reg prometheus.Registerer) error {
	if m == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.reportsEnabled, m.reportWrites} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Reports records whether reports can be written (the CRDs are installed).
func (m *Metrics) Reports(enabled bool) {
	if m == nil {
		return
	}
	v := 0.0
	if enabled {
		v = 1
	}
	m.reportsEnabled.Set(v)
}

// ReportWrite counts one write of a Report.
func (m *Metrics) ReportWrite(operation string) {
	if m == nil {
		return
	}
	m.reportWrites.WithLabelValues(operation).Inc()
}

// Exception states, as the metric's label spells them.
var exceptionStates = []string{"Active", "ExpiringSoon", "Expired", "Forbidden", "Invalid"}

// Exceptions records the exceptions by state and each one's expiry.
func (m *Metrics) Exceptions(states map[string]int, expiries map[string]time.Time) {
	if m == nil {
		return
	}
	for _, s := range exceptionStates {
		m.exceptions.WithLabelValues(s).Set(float64(states[s]))
	}
	m.exceptionExpiry.Reset()
	for name, t := range expiries {
		m.exceptionExpiry.WithLabelValues(name).Set(float64(t.Unix()))
	}
}

// RegisterCertificateExpiry registers imagegate_serving_certificate_expiry_timestamp_seconds,
// read from notAfter at each scrape: the end of the serving certificate the webhook presents
// now (0 while none is loaded). Alerts compare it with time(), so a certificate that is not
// renewed (cert-manager failing, or the Helm chart's own certificate before `helm upgrade`)
// is seen before the apiserver stops trusting the webhook.
func RegisterCertificateExpiry(reg prometheus.Registerer, notAfter func() time.Time) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "imagegate_serving_certificate_expiry_timestamp_seconds",
		Help: "When the webhook's serving certificate, as loaded now, expires (Unix time); 0 when none is loaded.",
	}, func() float64 {
		t := notAfter()
		if t.IsZero() {
			return 0
		}
		return float64(t.Unix())
	}))
}
