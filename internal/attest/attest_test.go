package attest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

var finished = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func read(t *testing.T, file, predicateType string) *Scan {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadScan(predicateType, b)
	if err != nil {
		t.Fatalf("ReadScan: %v", err)
	}
	return s
}

func TestReadTrivyReport(t *testing.T) {
	s := read(t, "trivy-cosign-vuln.json", v1alpha1.PredicateCosignVuln)
	if s.Name() != "trivy 0.58.1" || !s.Finished.Equal(finished) {
		t.Fatalf("scan = %q finished %s", s.Name(), s.Finished)
	}
	// CVE-2026-1111 is in two packages (Critical and High): one finding, at Critical.
	want := []Finding{{"CVE-2026-1111", Critical, nil}, {"CVE-2026-3333", Low, nil}, {"GHSA-aaaa-bbbb-cccc", High, nil}}
	for i := range s.Findings {
		s.Findings[i].Packages = nil // TestReadTrivyPackages
	}
	if fmt.Sprint(s.Findings) != fmt.Sprint(want) {
		t.Fatalf("findings = %v, want %v", s.Findings, want)
	}
}

// TestTrivyScanTimeIsTheReports: Trivy writes scanFinishedOn when it writes the predicate;
// a predicate written today from a report of last week is as old as the report.
func TestTrivyScanTimeIsTheReports(t *testing.T) {
	p := `{"scanner":{"uri":"pkg:github/aquasecurity/trivy@0.58.1","result":{"SchemaVersion":2,"CreatedAt":"2026-11-13T10:00:00Z"}},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`
	s, err := ReadScan(v1alpha1.PredicateCosignVuln, []byte(p))
	if err != nil {
		t.Fatal(err)
	}
	if want := finished.Add(-7 * 24 * time.Hour); !s.Finished.Equal(want) {
		t.Fatalf("finished = %s, want the report's CreatedAt %s", s.Finished, want)
	}
}

func TestReadInTotoVulns(t *testing.T) {
	s := read(t, "intoto-vulns-v02.json", v1alpha1.PredicateInTotoVulns)
	if s.Name() != "grype 0.84.0" {
		t.Fatalf("scanner = %q", s.Name())
	}
	want := []Finding{{"CVE-2026-2222", Critical, nil}, {"GHSA-xxxx-yyyy-zzzz", Medium, nil}}
	if fmt.Sprint(s.Findings) != fmt.Sprint(want) {
		t.Fatalf("findings = %v, want %v", s.Findings, want)
	}
}

// TestUnreadable: a result imagegate cannot read is an error naming the scanner, never an
// empty list of findings.
func TestUnreadable(t *testing.T) {
	trivy := func(result string) string {
		return `{"scanner":{"uri":"pkg:github/aquasecurity/trivy@0.58.1","version":"0.58.1","result":` + result + `},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`
	}
	intoto := func(result string) string {
		return `{"scanner":{"uri":"pkg:github/anchore/grype@0.84.0","result":` + result + `},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`
	}
	for _, c := range []struct {
		name, predicateType, predicate, want string
	}{
		{"not JSON", v1alpha1.PredicateCosignVuln, `{"scanner":`, "not the JSON object"},
		{"other scanner in cosign vuln", v1alpha1.PredicateCosignVuln, `{"scanner":{"uri":"pkg:github/anchore/grype@0.84.0","result":{"matches":[]}},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`, "grype 0.84.0 cannot be read: its result is in a format imagegate does not read"},
		{"trivy without result", v1alpha1.PredicateCosignVuln, trivy(`null`), "trivy 0.58.1 cannot be read: scanner.result is missing"},
		{"trivy without schema", v1alpha1.PredicateCosignVuln, trivy(`{"Results":[]}`), "no SchemaVersion"},
		{"trivy schema 3", v1alpha1.PredicateCosignVuln, trivy(`{"SchemaVersion":3}`), "schema version 3"},
		{"trivy results wrong type", v1alpha1.PredicateCosignVuln, trivy(`{"SchemaVersion":2,"Results":{"a":1}}`), "not Trivy's JSON report"},
		{"trivy unknown severity", v1alpha1.PredicateCosignVuln, trivy(`{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1","Severity":"SEVERE"}]}]}`), `severity "SEVERE"`},
		{"trivy finding without ID", v1alpha1.PredicateCosignVuln, trivy(`{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"Severity":"LOW"}]}]}`), "no VulnerabilityID"},
		{"no finish time", v1alpha1.PredicateCosignVuln, `{"scanner":{"uri":"pkg:github/aquasecurity/trivy@0.58.1","result":{"SchemaVersion":2}},"metadata":{}}`, "scanFinishedOn is missing"},
		{"no scanner", v1alpha1.PredicateCosignVuln, `{"scanner":{},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`, "scanner.uri is missing"},
		{"intoto result object", v1alpha1.PredicateInTotoVulns, intoto(`{"id":"CVE-1"}`), "must be a list of findings"},
		{"intoto no result", v1alpha1.PredicateInTotoVulns, intoto(`null`), "must be a list of findings"},
		{"intoto no severity", v1alpha1.PredicateInTotoVulns, intoto(`[{"id":"CVE-1"}]`), "has no severity"},
		{"intoto bad score", v1alpha1.PredicateInTotoVulns, intoto(`[{"id":"CVE-1","severity":[{"method":"x","score":"11"}]}]`), `score "11"`},
		{"intoto NaN", v1alpha1.PredicateInTotoVulns, intoto(`[{"id":"CVE-1","severity":[{"method":"x","score":"NaN"}]}]`), `score "NaN"`},
		{"intoto no id", v1alpha1.PredicateInTotoVulns, intoto(`[{"severity":[{"method":"x","score":"1"}]}]`), "has no id"},
		{"other predicate", "https://slsa.dev/provenance/v1", intoto(`[]`), "not a vulnerability predicate type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := ReadScan(c.predicateType, []byte(c.predicate))
			var ue *UnreadableError
			if !errors.As(err, &ue) {
				t.Fatalf("ReadScan = %+v, %v; want an UnreadableError", s, err)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "vulnerability scan by") {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func rule(t *testing.T, v v1alpha1.VulnerabilityRules) *Rule {
	t.Helper()
	r, err := Compile(&v1alpha1.AttestationRule{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestJudge(t *testing.T) {
	scan := &Scan{Scanner: "pkg:github/aquasecurity/trivy@0.58.1", Version: "0.58.1", Finished: finished, Findings: []Finding{
		{ID: "CVE-2026-1111", Severity: Critical}, {ID: "CVE-2026-2222", Severity: Critical}, {ID: "CVE-2026-3333", Severity: High}, {ID: "CVE-2026-4444", Severity: Low},
	}}
	day := 24 * time.Hour
	at := finished.Add
	ignoreUntil := metav1.NewTime(at(3 * day))
	for _, c := range []struct {
		name        string
		rules       v1alpha1.VulnerabilityRules
		now         time.Time
		problem     string
		expires     time.Time
		scanExpires time.Time
	}{
		{name: "no limit", rules: v1alpha1.VulnerabilityRules{Scanners: []string{"pkg:github/aquasecurity/trivy"}}, now: at(time.Hour)},
		{name: "critical allowed", rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityCritical}, now: at(time.Hour)},
		{name: "above high", rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh}, now: at(time.Hour),
			problem: "its newest vulnerability scan (trivy 0.58.1, finished 2026-11-20T10:00:00Z) has 2 vulnerabilities above High: CVE-2026-1111 (Critical), CVE-2026-2222 (Critical)"},
		{name: "above low", rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityLow}, now: at(time.Hour),
			problem: "has 3 vulnerabilities above Low: CVE-2026-1111 (Critical), CVE-2026-2222 (Critical), CVE-2026-3333 (High)"},
		{name: "above none", rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityNone}, now: at(time.Hour),
			problem: "has 4 vulnerabilities above None"},
		{name: "ignored, no expiry", now: at(time.Hour), rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, Ignore: []v1alpha1.IgnoredVulnerability{
			{ID: "CVE-2026-1111", Reason: "not reachable"}, {ID: "CVE-2026-2222", Reason: "not reachable"}}}},
		{name: "ignored until day 3", now: at(2 * day), expires: at(3 * day), rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, Ignore: []v1alpha1.IgnoredVulnerability{
			{ID: "CVE-2026-1111", Reason: "patch due", Expires: &ignoreUntil}, {ID: "CVE-2026-2222", Reason: "not reachable"}}}},
		{name: "ignore expired at its instant", now: at(3 * day), rules: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, Ignore: []v1alpha1.IgnoredVulnerability{
			{ID: "CVE-2026-1111", Reason: "patch due", Expires: &ignoreUntil}, {ID: "CVE-2026-2222", Reason: "not reachable"}}},
			problem: "has 1 vulnerability above High: CVE-2026-1111 (Critical)"},
		{name: "fresh", now: at(23 * time.Hour), expires: at(day), scanExpires: at(day), rules: v1alpha1.VulnerabilityRules{MaxAgeSeconds: int32((day) / time.Second)}},
		{name: "maxAge reached", now: at(day), scanExpires: at(day), rules: v1alpha1.VulnerabilityRules{MaxAgeSeconds: int32((day) / time.Second)},
			problem: "is 24h old, older than maxAgeSeconds 86400 (24h)"},
		{name: "stale", now: at(6*day + time.Hour), scanExpires: at(day), rules: v1alpha1.VulnerabilityRules{MaxAgeSeconds: int32((day) / time.Second)},
			problem: "its newest vulnerability scan (trivy 0.58.1, finished 2026-11-20T10:00:00Z) is 6 days old, older than maxAgeSeconds 86400 (24h)"},
		{name: "from the future", now: at(-time.Hour), rules: v1alpha1.VulnerabilityRules{MaxAgeSeconds: int32((day) / time.Second)},
			problem: "finished in the future"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := rule(t, c.rules).Judge(scan, c.now, nil)
			if c.problem == "" && v.Problem != "" || !strings.Contains(v.Problem, c.problem) {
				t.Fatalf("problem = %q, want %q", v.Problem, c.problem)
			}
			if !v.Expires.Equal(c.expires) || !v.ScanExpires.Equal(c.scanExpires) {
				t.Fatalf("expires = %s, scan expires %s; want %s, %s", v.Expires, v.ScanExpires, c.expires, c.scanExpires)
			}
		})
	}
}

func TestJudgeCapsTheList(t *testing.T) {
	scan := &Scan{Scanner: "pkg:github/aquasecurity/trivy@0.58.1", Finished: finished}
	for i := range 1000 {
		scan.Findings = append(scan.Findings, Finding{ID: fmt.Sprintf("CVE-2026-%04d", i), Severity: Critical})
	}
	v := rule(t, v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh}).Judge(scan, finished, nil)
	if !strings.Contains(v.Problem, "has 1000 vulnerabilities above High") || !strings.HasSuffix(v.Problem, "CVE-2026-0009 (Critical) and 990 more") || len(v.Problem) > 500 {
		t.Fatalf("problem = %q", v.Problem)
	}
}

func TestTrustsScanner(t *testing.T) {
	r := rule(t, v1alpha1.VulnerabilityRules{Scanners: []string{"pkg:github/aquasecurity/trivy", "pkg:github/anchore/grype@0.84.0"}})
	for uri, want := range map[string]bool{
		"pkg:github/aquasecurity/trivy@0.58.1":      true,
		"pkg:github/aquasecurity/trivy":             true,
		"pkg:github/aquasecurity/trivy-fork@0.58.1": false,
		"pkg:github/anchore/grype@0.84.0":           true,
		"pkg:github/anchore/grype@0.85.0":           false,
		"pkg:github/evil/trivy@1":                   false,
	} {
		if got := r.TrustsScanner(uri); got != want {
			t.Errorf("TrustsScanner(%q) = %v, want %v", uri, got, want)
		}
	}
}

func TestCompile(t *testing.T) {
	for _, c := range []struct {
		rule v1alpha1.AttestationRule
		want string
	}{
		{v1alpha1.AttestationRule{Name: "a", PredicateType: v1alpha1.PredicateCosignVuln, Signers: []string{"ci", "other"}}, `signer "other" is not one of the policy's signers (ci)`},
		{v1alpha1.AttestationRule{Name: "a", PredicateType: "https://slsa.dev/provenance/v1", Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh}}, "vulnerabilities applies to"},
		{v1alpha1.AttestationRule{Name: "a", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: "Severe"}}, `maxSeverity "Severe"`},
		{v1alpha1.AttestationRule{Name: "a", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v1alpha1.VulnerabilityRules{MaxAgeSeconds: int32((-time.Hour) / time.Second)}}, "must be positive"},
		{v1alpha1.AttestationRule{Name: "a", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v1alpha1.VulnerabilityRules{Ignore: []v1alpha1.IgnoredVulnerability{{ID: "X", Reason: "r"}, {ID: "X", Reason: "r"}}}}, `ignore lists "X" twice`},
	} {
		if _, err := Compile(&c.rule, []string{"ci"}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compile(%+v) = %v, want %q", c.rule, err, c.want)
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24h", 6*24*time.Hour + time.Hour: "6 days", 90 * time.Minute: "1h30m", time.Minute: "1m", 90 * time.Second: "1m30s", 5 * time.Second: "5s",
	} {
		if got := Age(d); got != want {
			t.Errorf("Age(%s) = %q, want %q", d, got, want)
		}
	}
}
