package verify

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the verifier's Prometheus metrics.
type Metrics struct {
	cacheLookups *prometheus.CounterVec
	requests     *prometheus.HistogramVec
}

// NewMetrics registers the verifier's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_verify_cache_lookups_total",
			Help: "Lookups of verified results (kind=signature) and tag resolutions (kind=tag) in the verifier's cache, by result (hit, miss).",
		}, []string{"kind", "result"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegate_registry_operation_duration_seconds",
			Help:    "Time taken by registry operations of the verifier (resolve, signatures, referrers, bundles, attestations, notation), each one or more HTTP requests.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"operation"}),
	}
	reg.MustRegister(m.cacheLookups, m.requests)
	return m
}

func (m *Metrics) cache(kind string, hit bool) {
	if m == nil {
		return
	}
	r := "miss"
	if hit {
		r = "hit"
	}
	m.cacheLookups.WithLabelValues(kind, r).Inc()
}

func (m *Metrics) registry(op string, start time.Time) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
