package chart

import (
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
)

var (
	metricName = regexp.MustCompile(`\bimagegate_[a-z_]+\b`)
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
)

// exportedMetrics are the names of the metrics the manager registers (cmd/manager/main.go registers
// these three sets).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := telemetry.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	verify.NewMetrics(reg)
	if err := telemetry.RegisterCertificateExpiry(reg, func() time.Time { return time.Time{} }); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		// A Registry is itself a Collector of everything registered with it.
		reg.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metrics: %v", len(names), names)
	}
	return names
}
