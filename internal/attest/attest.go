// Package attest reads the predicates of signed attestations and judges them against a
// policy's attestation rules: the vulnerability scans of Trivy (cosign's vuln/v1 predicate,
// whose result is Trivy's JSON report) and of any scanner that writes in-toto's vulns v0.2,
// SLSA provenance (v1 and v0.2) against typed provenance rules, and any statement against
// CEL conditions, compiled and cost-limited as the kube-apiserver does.
// It is pure: bytes and a clock in, a verdict out. internal/verify finds and verifies the
// attestations in registries and hands their predicates here.
package attest

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/text"
)

// Severity orders findings: a finding above a rule's maxSeverity refuses the image.
type Severity uint8

// Severities, lowest first. A finding the scanner could not rate counts as Critical.
const (
	None Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = [...]string{"None", "Low", "Medium", "High", "Critical"}

func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "Critical"
}

// MarshalText writes the severity's name (the CLI's JSON).
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// parseSeverity reads an API severity.
func parseSeverity(s v1alpha1.Severity) (Severity, bool) {
	for i, n := range severityNames {
		if n == string(s) {
			return Severity(uint8(i)), true //nolint:gosec // i < len(severityNames) = 5
		}
	}
	return 0, false
}

// Finding is one vulnerability a scan reported.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	// Packages are the package URLs the scanner found it in (Trivy's PkgIdentifier.PURL).
	Packages []string `json:"packages,omitempty"`
}

// Scan is a vulnerability scan as a predicate records it.
type Scan struct {
	// Scanner is the scanner's URI (a package URL such as pkg:github/aquasecurity/trivy@0.58.1).
	Scanner string `json:"scanner"`
	// Version is the scanner's version as the predicate states it.
	Version string `json:"version,omitempty"`
	// Finished is the scan's scanFinishedOn time.
	Finished time.Time `json:"finished"`
	// Findings are its vulnerabilities, one per ID (at the highest severity reported for it).
	Findings []Finding `json:"findings,omitempty"`
}

// Name is how messages name the scanner: "trivy 0.58.1".
func (s *Scan) Name() string {
	uri := s.Scanner
	version := s.Version
	if base, v, ok := strings.Cut(uri, "@"); ok {
		uri = base
		if version == "" {
			version = v
		}
	}
	if i := strings.LastIndexByte(uri, '/'); i >= 0 && strings.HasPrefix(uri, "pkg:") {
		uri = uri[i+1:]
	}
	if uri == "" {
		uri = "an unnamed scanner"
	}
	version = strings.TrimPrefix(version, "v")
	if version == "" {
		return printable(uri)
	}
	return printable(uri + " " + version)
}

// IsVulnerabilityPredicate reports whether imagegate reads findings from predicates of this type.
func IsVulnerabilityPredicate(predicateType string) bool {
	return predicateType == v1alpha1.PredicateCosignVuln || predicateType == v1alpha1.PredicateInTotoVulns
}

// Rule is an attestation rule, compiled.
type Rule struct {
	// Name and PredicateType are as written.
	Name, PredicateType string
	// Signers names the policy's signers that may sign it; nil: any.
	Signers []string
	// VEXSigners names the policy's signers whose VEX statements count; nil: VEX is not read.
	VEXSigners []string

	vuln        bool
	maxSeverity Severity
	limited     bool // maxSeverity is set
	maxAge      time.Duration
	ignore      map[string]ignored
	scanners    []string

	provenance *provenanceRule
	conditions []*condition
}

type ignored struct {
	expires time.Time // zero: never
}

// Compile checks an attestation rule and compiles it; signers are the names of the policy's
// signers, which the rule's signers must be among.
func Compile(r *v1alpha1.AttestationRule, signers []string) (*Rule, error) {
	c := &Rule{Name: r.Name, PredicateType: r.PredicateType, Signers: r.Signers}
	for _, s := range r.Signers {
		if !slices.Contains(signers, s) {
			return nil, fmt.Errorf("attestation %q: signer %q is not one of the policy's signers (%s)", r.Name, s, strings.Join(signers, ", "))
		}
	}
	v := &r.Vulnerabilities
	if IsVulnerabilityPredicate(r.PredicateType) {
		c.vuln = true
	} else if v.MaxSeverity != "" || v.MaxAgeSeconds != 0 || len(v.Ignore) > 0 || len(v.Scanners) > 0 || len(v.VEX.Signers) > 0 {
		return nil, fmt.Errorf("attestation %q: vulnerabilities applies to %s and %s only, not %q", r.Name, v1alpha1.PredicateCosignVuln, v1alpha1.PredicateInTotoVulns, r.PredicateType)
	}
	if v.MaxSeverity != "" {
		sev, ok := parseSeverity(v.MaxSeverity)
		if !ok {
			return nil, fmt.Errorf("attestation %q: maxSeverity %q is not one of None, Low, Medium, High, Critical", r.Name, v.MaxSeverity)
		}
		c.maxSeverity, c.limited = sev, true
	}
	if v.MaxAgeSeconds != 0 {
		if v.MaxAgeSeconds < 0 {
			return nil, fmt.Errorf("attestation %q: maxAgeSeconds %d must be positive", r.Name, v.MaxAgeSeconds)
		}
		c.maxAge = time.Duration(v.MaxAgeSeconds) * time.Second
	}
	for _, ig := range v.Ignore {
		if c.ignore == nil {
			c.ignore = map[string]ignored{}
		}
		if _, dup := c.ignore[ig.ID]; dup {
			return nil, fmt.Errorf("attestation %q: ignore lists %q twice", r.Name, ig.ID)
		}
		var e time.Time
		if ig.Expires != nil {
			e = ig.Expires.Time
		}
		c.ignore[ig.ID] = ignored{expires: e}
	}
	c.scanners = v.Scanners
	for _, s := range v.VEX.Signers {
		if !slices.Contains(signers, s) {
			return nil, fmt.Errorf("attestation %q: vex signer %q is not one of the policy's signers (%s)", r.Name, s, strings.Join(signers, ", "))
		}
	}
	c.VEXSigners = v.VEX.Signers
	prov, err := compileProvenance(r.Name, r.PredicateType, &r.Provenance)
	if err != nil {
		return nil, err
	}
	c.provenance = prov
	if c.conditions, err = compileConditions(r); err != nil {
		return nil, err
	}
	return c, nil
}

// Vulnerabilities reports whether the rule reads vulnerability findings.
func (r *Rule) Vulnerabilities() bool { return r.vuln }

// TrustsScanner reports whether the rule counts results of the scanner with this URI.
func (r *Rule) TrustsScanner(uri string) bool {
	if len(r.scanners) == 0 {
		return true
	}
	for _, s := range r.scanners {
		if uri == s || (!strings.Contains(s, "@") && strings.HasPrefix(uri, s+"@")) {
			return true
		}
	}
	return false
}

// Verdict is a scan judged against a rule at a time.
type Verdict struct {
	// Problem is why the scan does not pass ("" when it passes).
	Problem string `json:"problem,omitempty"`
	// Refusing are the findings that refuse the image.
	Refusing []Finding `json:"refusing,omitempty"`
	// Ignored are the IDs of findings the rule ignores now.
	Ignored []string `json:"ignored,omitempty"`
	// RuledOut are the findings above maxSeverity that VEX statements rule out, with the
	// statement that does.
	RuledOut []VEXDecision `json:"ruledOut,omitempty"`
	// Expires is when a passing verdict stops holding: the scan reaches maxAge, or an
	// ignored finding's exception ends. Zero: never.
	Expires time.Time `json:"expires,omitzero"`
	// ScanExpires is when the scan reaches maxAge. Zero: no maxAge.
	ScanExpires time.Time `json:"scanExpires,omitzero"`
}

// maxListed is how many refusing findings a message lists; it says how many more.
const maxListed = 10

// clockSkew is how far in the future a scan's finish time may be (clocks differ).
const clockSkew = 5 * time.Minute

// Judge judges a scan against the rule at now, with what the image's VEX documents say
// (nil: none).
func (r *Rule) Judge(s *Scan, now time.Time, x *VEX) Verdict {
	var v Verdict
	what := fmt.Sprintf("its newest vulnerability scan (%s, finished %s)", s.Name(), s.Finished.UTC().Format(time.RFC3339))
	if s.Finished.After(now.Add(clockSkew)) {
		v.Problem = what + " finished in the future by imagegate's clock; a scan's time must be when it ran"
		return v
	}
	if r.maxAge > 0 {
		v.ScanExpires = s.Finished.Add(r.maxAge)
		if age := now.Sub(s.Finished); age >= r.maxAge { // expired at the instant, as ignores are
			v.Problem = fmt.Sprintf("%s is %s old, older than maxAgeSeconds %d (%s)", what, Age(age), int64(r.maxAge/time.Second), Age(r.maxAge))
			return v
		}
		v.Expires = v.ScanExpires
	}
	for i := range s.Findings {
		f := s.Findings[i]
		if !r.limited || f.Severity <= r.maxSeverity {
			continue
		}
		if d := x.Decide(&f); d != nil && d.RulesOut() {
			v.RuledOut = append(v.RuledOut, *d)
			continue
		}
		if ig, ok := r.ignore[f.ID]; ok {
			if ig.expires.IsZero() || now.Before(ig.expires) {
				v.Ignored = append(v.Ignored, f.ID)
				if !ig.expires.IsZero() && (v.Expires.IsZero() || ig.expires.Before(v.Expires)) {
					v.Expires = ig.expires
				}
				continue
			}
		}
		v.Refusing = append(v.Refusing, f)
	}
	if len(v.Refusing) > 0 {
		slices.SortStableFunc(v.Refusing, func(a, b Finding) int {
			if a.Severity != b.Severity {
				return int(b.Severity) - int(a.Severity)
			}
			return strings.Compare(a.ID, b.ID)
		})
		var b strings.Builder
		fmt.Fprintf(&b, "%s has %d vulnerabilit%s above %s: ", what, len(v.Refusing), text.Plural(len(v.Refusing), "y", "ies"), r.maxSeverity)
		for i, f := range v.Refusing {
			if i == maxListed {
				fmt.Fprintf(&b, " and %d more", len(v.Refusing)-maxListed)
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s)", printable(f.ID), f.Severity)
		}
		if len(v.RuledOut) > 0 {
			fmt.Fprintf(&b, "; VEX ruled out %d: ", len(v.RuledOut))
			writeRuledOut(&b, v.RuledOut)
		}
		v.Problem = b.String()
		v.Expires = time.Time{}
	}
	return v
}

// Age says a duration the way people read ages: "6 days", "5h", "90m", "30s".
func Age(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, (d%time.Minute)/time.Second)
	default:
		return fmt.Sprintf("%ds", d/time.Second)
	}
}

// printable keeps requester- or scanner-controlled text to one short printable line.
func printable(s string) string {
	const maxLen = 128
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLen {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			b.WriteString("?")
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
