package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// trivyURI is the package URL Trivy names itself by in the predicates it writes
// (pkg:github/aquasecurity/trivy@<version>).
const trivyURI = "pkg:github/aquasecurity/trivy"

// maxFindings bounds the findings kept from one scan; a scan with more is unreadable, never
// truncated into a pass.
const maxFindings = 100000

// header is what every vulnerability predicate of both types carries.
type header struct {
	Scanner struct {
		URI     string          `json:"uri"`
		Version string          `json:"version"`
		Result  json.RawMessage `json:"result"`
	} `json:"scanner"`
	Metadata struct {
		ScanFinishedOn *time.Time `json:"scanFinishedOn"`
	} `json:"metadata"`
}

// UnreadableError says a scan's result is not one imagegate can read: it refuses, naming
// the scanner, and never passes.
type UnreadableError struct {
	// Scan has what could be read of it (the scanner, perhaps the time).
	Scan Scan
	Err  error
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("the vulnerability scan by %s cannot be read: %v", e.Scan.Name(), e.Err)
}

func (e *UnreadableError) Unwrap() error { return e.Err }

// ReadScan reads the predicate of a vulnerability attestation of the given type. The result
// is read strictly, per scanner: Trivy's report in cosign's vuln/v1, the findings list in
// in-toto's vulns v0.2. Anything else is an *UnreadableError.
func ReadScan(predicateType string, predicate []byte) (*Scan, error) {
	var h header
	if err := json.Unmarshal(predicate, &h); err != nil {
		return nil, &UnreadableError{Err: fmt.Errorf("the predicate is not the JSON object of %s: %v", predicateType, shortErr(err))}
	}
	s := &Scan{Scanner: h.Scanner.URI, Version: h.Scanner.Version}
	fail := func(format string, args ...any) (*Scan, error) {
		return nil, &UnreadableError{Scan: *s, Err: fmt.Errorf(format, args...)}
	}
	if s.Scanner == "" {
		return fail("scanner.uri is missing")
	}
	if h.Metadata.ScanFinishedOn == nil || h.Metadata.ScanFinishedOn.IsZero() {
		return fail("metadata.scanFinishedOn is missing, so its age is unknown")
	}
	s.Finished = *h.Metadata.ScanFinishedOn
	var err error
	switch predicateType {
	case v1alpha1.PredicateCosignVuln:
		if s.Scanner != trivyURI && !strings.HasPrefix(s.Scanner, trivyURI+"@") {
			return fail("its result is in a format imagegate does not read: in %s it reads the report of Trivy (scanner.uri %s@<version>)", predicateType, trivyURI)
		}
		var created *time.Time
		s.Findings, created, err = readTrivy(h.Scanner.Result)
		// Trivy sets both scan times to when it writes the predicate; its report's CreatedAt
		// is when it scanned. A predicate written later from an old report (trivy convert)
		// is as old as the report.
		if err == nil && created != nil && !created.IsZero() && created.Before(s.Finished) {
			s.Finished = *created
		}
	case v1alpha1.PredicateInTotoVulns:
		s.Findings, err = readInTotoVulns(h.Scanner.Result)
	default:
		return fail("%q is not a vulnerability predicate type imagegate reads", predicateType)
	}
	if err != nil {
		return fail("%v", err)
	}
	return s, nil
}

// ReadHeader reads only a scan's scanner URI and finish time (zero when it has none), to
// pick the scans that count and order them before one is read in full.
func ReadHeader(predicate []byte) (scanner string, finished time.Time) {
	var h struct {
		Scanner struct {
			URI string `json:"uri"`
		} `json:"scanner"`
		Metadata struct {
			ScanFinishedOn *time.Time `json:"scanFinishedOn"`
		} `json:"metadata"`
	}
	if json.Unmarshal(predicate, &h) != nil {
		return "", time.Time{}
	}
	if h.Metadata.ScanFinishedOn != nil {
		finished = *h.Metadata.ScanFinishedOn
	}
	return h.Scanner.URI, finished
}

// trivyReport is the part of Trivy's JSON report (schema version 2) that carries findings.
type trivyReport struct {
	SchemaVersion *int       `json:"SchemaVersion"`
	CreatedAt     *time.Time `json:"CreatedAt"`
	Results       []struct {
		Target          string `json:"Target"`
		Vulnerabilities []struct {
			VulnerabilityID string `json:"VulnerabilityID"`
			Severity        string `json:"Severity"`
			PkgIdentifier   struct {
				PURL string `json:"PURL"`
			} `json:"PkgIdentifier"`
		} `json:"Vulnerabilities"`
	} `json:"Results"`
}

func readTrivy(raw json.RawMessage) ([]Finding, *time.Time, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil, errors.New("scanner.result is missing: it must hold Trivy's JSON report")
	}
	var r trivyReport
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, nil, fmt.Errorf("scanner.result is not Trivy's JSON report: %v", shortErr(err))
	}
	if r.SchemaVersion == nil {
		return nil, nil, errors.New("scanner.result has no SchemaVersion, so it is not Trivy's JSON report")
	}
	if *r.SchemaVersion != 2 {
		return nil, nil, fmt.Errorf("scanner.result is Trivy's report schema version %d; imagegate reads version 2", *r.SchemaVersion)
	}
	f := findings{}
	for i, res := range r.Results {
		for j, v := range res.Vulnerabilities {
			if v.VulnerabilityID == "" {
				return nil, nil, fmt.Errorf("Results[%d].Vulnerabilities[%d] has no VulnerabilityID", i, j)
			}
			sev, ok := trivySeverity(v.Severity)
			if !ok {
				return nil, nil, fmt.Errorf("Results[%d].Vulnerabilities[%d] (%s) has severity %q, not one of Trivy's (UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL)", i, j, printable(v.VulnerabilityID), printable(v.Severity))
			}
			if err := f.add(v.VulnerabilityID, sev); err != nil {
				return nil, nil, err
			}
			f.addPackage(v.VulnerabilityID, v.PkgIdentifier.PURL)
		}
	}
	return f.list(), r.CreatedAt, nil
}

func trivySeverity(s string) (Severity, bool) {
	switch s {
	case "UNKNOWN", "CRITICAL":
		return Critical, true
	case "HIGH":
		return High, true
	case "MEDIUM":
		return Medium, true
	case "LOW":
		return Low, true
	}
	return 0, false
}

// intotoResult is in-toto's vulns v0.2 scanner.result: a list of findings, each with one or
// more severity scores by method.
type intotoResult []struct {
	ID       string `json:"id"`
	Severity []struct {
		Method string `json:"method"`
		Score  string `json:"score"`
	} `json:"severity"`
}

func readInTotoVulns(raw json.RawMessage) ([]Finding, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '[' {
		return nil, errors.New("scanner.result must be a list of findings (an empty list: none found)")
	}
	var r intotoResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("scanner.result is not in-toto's vulns v0.2 findings list: %v", shortErr(err))
	}
	f := findings{}
	for i, v := range r {
		if v.ID == "" {
			return nil, fmt.Errorf("scanner.result[%d] has no id", i)
		}
		if len(v.Severity) == 0 {
			return nil, fmt.Errorf("scanner.result[%d] (%s) has no severity", i, printable(v.ID))
		}
		// The highest severity any method gives counts.
		var sev Severity
		for _, s := range v.Severity {
			x, ok := scoreSeverity(s.Score)
			if !ok {
				return nil, fmt.Errorf("scanner.result[%d] (%s) has severity score %q (method %q), neither a CVSS score from 0 to 10 nor a severity name", i, printable(v.ID), printable(s.Score), printable(s.Method))
			}
			sev = max(sev, x)
		}
		if err := f.add(v.ID, sev); err != nil {
			return nil, err
		}
	}
	return f.list(), nil
}

// scoreSeverity reads a severity score: a name (critical, high, moderate, ...) or a CVSS
// score, rated by CVSS v3's bands.
func scoreSeverity(score string) (Severity, bool) {
	switch strings.ToLower(strings.TrimSpace(score)) {
	case "critical", "unknown":
		return Critical, true
	case "high", "important":
		return High, true
	case "medium", "moderate":
		return Medium, true
	case "low":
		return Low, true
	case "none", "negligible":
		return None, true
	}
	x, err := strconv.ParseFloat(strings.TrimSpace(score), 64)
	if err != nil || x < 0 || x > 10 || x != x {
		return 0, false
	}
	switch {
	case x >= 9:
		return Critical, true
	case x >= 7:
		return High, true
	case x >= 4:
		return Medium, true
	case x > 0:
		return Low, true
	}
	return None, true
}

// findings keeps one finding per ID, at the highest severity reported for it (a CVE in two
// packages is one vulnerability).
type findings struct {
	order []string
	sev   map[string]Severity
	pkgs  map[string][]string // package URLs of each finding, when the scanner gives them
}

// addPackage records a package URL a finding was reported in (VEX statements may name it).
func (f *findings) addPackage(id, purl string) {
	if purl == "" {
		return
	}
	if f.pkgs == nil {
		f.pkgs = map[string][]string{}
	}
	f.pkgs[id] = append(f.pkgs[id], purl)
}

func (f *findings) add(id string, s Severity) error {
	if f.sev == nil {
		f.sev = map[string]Severity{}
	}
	old, seen := f.sev[id]
	if !seen {
		if len(f.order) >= maxFindings {
			return fmt.Errorf("it lists more than %d vulnerabilities", maxFindings)
		}
		f.order = append(f.order, id)
	}
	f.sev[id] = max(old, s)
	return nil
}

func (f *findings) list() []Finding {
	out := make([]Finding, len(f.order))
	for i, id := range f.order {
		out[i] = Finding{ID: id, Severity: f.sev[id], Packages: f.pkgs[id]}
	}
	return out
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
