package telemetry

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCertificateExpiryIsReadAtEachScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	var notAfter time.Time
	if err := RegisterCertificateExpiry(reg, func() time.Time { return notAfter }); err != nil {
		t.Fatal(err)
	}
	const name = "imagegate_serving_certificate_expiry_timestamp_seconds"
	expect := func(v string) {
		t.Helper()
		want := "# HELP " + name + " When the webhook's serving certificate, as loaded now, expires (Unix time); 0 when none is loaded.\n# TYPE " + name + " gauge\n" + name + " " + v + "\n"
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), name); err != nil {
			t.Error(err)
		}
	}
	expect("0")
	notAfter = time.Unix(1_900_000_000, 0)
	expect("1.9e+09")
	// A renewed certificate is seen at the next scrape.
	notAfter = time.Unix(1_907_776_000, 0)
	expect("1.907776e+09")
}
