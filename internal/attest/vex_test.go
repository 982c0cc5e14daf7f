package attest

import (
	"strings"
	"testing"
	"time"

	"github.com/openvex/go-vex/pkg/vex"

	"github.com/imagegate/imagegate/api/v1alpha1"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// TestVEX: which statement decides a finding, for which product, as the OpenVEX
// specification says: the newest statement about the vulnerability for the product.
func TestVEX(t *testing.T) {
	const repo = "ghcr.io/acme/app"
	digest := "sha256:" + strings.Repeat("ab", 32)
	other := "sha256:" + strings.Repeat("cd", 32)
	purl := "pkg:oci/app@sha256%3A" + strings.Repeat("ab", 32) + "?repository_url=ghcr.io%2Facme%2Fapp"
	libssl := "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12.8"
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	read := func(b []byte) *vex.VEX {
		d, err := ReadVEX(b)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	notAffected := func(id, product string, at time.Time) rt.VEXStatement {
		return rt.VEXStatement{Vulnerability: id, Product: product, Status: vex.StatusNotAffected, Justification: vex.VulnerableCodeNotInExecutePath, Timestamp: at}
	}
	finding := &Finding{ID: "CVE-2026-1111", Severity: Critical, Packages: []string{libssl}}
	for _, c := range []struct {
		name string
		docs [][]byte
		want string // the status that decides; "" none
	}{
		{"by package URL", [][]byte{rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-1111", purl, time.Time{}))}, "not_affected"},
		{"by package URL without the digest", [][]byte{rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-1111", "pkg:oci/app?repository_url=ghcr.io%2Facme%2Fapp", time.Time{}))}, "not_affected"},
		{"by reference", [][]byte{rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-1111", repo+"@"+digest, time.Time{}))}, "not_affected"},
		{"another digest", [][]byte{rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-1111", repo+"@"+other, time.Time{}))}, ""},
		{"another repository", [][]byte{rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-1111", "pkg:oci/app?repository_url=ghcr.io%2Fevil%2Fapp", time.Time{}))}, ""},
		{"another vulnerability", [][]byte{rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-9999", purl, time.Time{}))}, ""},
		{"by alias", [][]byte{rt.OpenVEX("doc-1", t0, rt.VEXStatement{Vulnerability: "GHSA-aaaa-bbbb-cccc", Aliases: []string{"CVE-2026-1111"}, Product: purl, Status: vex.StatusFixed})}, "fixed"},
		{"newest wins: affected after not_affected", [][]byte{
			rt.OpenVEX("doc-1", t0, notAffected("CVE-2026-1111", purl, time.Time{})),
			rt.OpenVEX("doc-2", t0.Add(time.Hour), rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: purl, Status: vex.StatusAffected}),
		}, "affected"},
		{"newest wins: statement time over document time", [][]byte{
			rt.OpenVEX("doc-1", t0.Add(time.Hour), rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: purl, Status: vex.StatusUnderInvestigation, Timestamp: t0}),
			rt.OpenVEX("doc-2", t0, notAffected("CVE-2026-1111", purl, t0.Add(30*time.Minute))),
		}, "not_affected"},
		{"subcomponent matches the package", [][]byte{rt.OpenVEX("doc-1", t0, rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: purl, Subcomponents: []string{"pkg:deb/debian/libssl3"}, Status: vex.StatusNotAffected, Justification: vex.ComponentNotPresent})}, "not_affected"},
		{"subcomponent of another package", [][]byte{rt.OpenVEX("doc-1", t0, rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: purl, Subcomponents: []string{"pkg:deb/debian/zlib1g"}, Status: vex.StatusNotAffected, Justification: vex.ComponentNotPresent})}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var docs []*vex.VEX
			for _, b := range c.docs {
				docs = append(docs, read(b))
			}
			d := NewVEX(repo, digest, docs).Decide(finding)
			got := ""
			if d != nil {
				got = d.Status
			}
			if got != c.want {
				t.Fatalf("decided %q (%+v), want %q", got, d, c.want)
			}
		})
	}
	// A finding the scanner names no package for: a statement about subcomponents does not
	// apply, one about the whole image does.
	bare := &Finding{ID: "CVE-2026-1111", Severity: Critical}
	sub := NewVEX(repo, digest, []*vex.VEX{read(rt.OpenVEX("doc-1", t0, rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: purl, Subcomponents: []string{"pkg:deb/debian/libssl3"}, Status: vex.StatusNotAffected, Justification: vex.ComponentNotPresent}))})
	if d := sub.Decide(bare); d != nil {
		t.Fatalf("a subcomponent statement applied to a finding without packages: %+v", d)
	}
	if _, err := ReadVEX([]byte(`{"statements":[{"vulnerability":{"name":"CVE-1"},"status":"maybe"}]}`)); err == nil || !strings.Contains(err.Error(), `status "maybe"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestJudgeWithVEX: VEX removes findings above maxSeverity, the message says which and by
// which statement, and the verdict lists them.
func TestJudgeWithVEX(t *testing.T) {
	const repo = "ghcr.io/acme/app"
	digest := "sha256:" + strings.Repeat("ab", 32)
	purl := "pkg:oci/app@sha256%3A" + strings.Repeat("ab", 32) + "?repository_url=ghcr.io%2Facme%2Fapp"
	doc, err := ReadVEX(rt.OpenVEX("https://acme.example/vex/app-2026-11", finished, rt.VEXStatement{
		Vulnerability: "CVE-2026-1111", Product: purl, Status: vex.StatusNotAffected, Justification: vex.VulnerableCodeNotInExecutePath,
	}))
	if err != nil {
		t.Fatal(err)
	}
	x := NewVEX(repo, digest, []*vex.VEX{doc})
	r, err := Compile(&v1alpha1.AttestationRule{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln,
		Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, VEX: v1alpha1.VEXRules{Signers: []string{"vendor"}}}}, []string{"release", "vendor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(&v1alpha1.AttestationRule{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln,
		Vulnerabilities: v1alpha1.VulnerabilityRules{VEX: v1alpha1.VEXRules{Signers: []string{"stranger"}}}}, []string{"release"}); err == nil || !strings.Contains(err.Error(), `vex signer "stranger" is not one of the policy's signers (release)`) {
		t.Fatalf("err = %v", err)
	}
	scan := &Scan{Scanner: "pkg:github/aquasecurity/trivy@0.58.1", Version: "0.58.1", Finished: finished, Findings: []Finding{{ID: "CVE-2026-1111", Severity: Critical}}}
	v := r.Judge(scan, finished, x)
	if v.Problem != "" || len(v.RuledOut) != 1 || v.RuledOut[0].Justification != string(vex.VulnerableCodeNotInExecutePath) {
		t.Fatalf("verdict = %+v", v)
	}
	scan.Findings = append(scan.Findings, Finding{ID: "CVE-2026-2222", Severity: Critical})
	v = r.Judge(scan, finished, x)
	want := "has 1 vulnerability above High: CVE-2026-2222 (Critical); VEX ruled out 1: CVE-2026-1111 (not_affected, https://acme.example/vex/app-2026-11)"
	if !strings.Contains(v.Problem, want) {
		t.Fatalf("problem = %q\nwant it to say %q", v.Problem, want)
	}
}

func TestReadTrivyPackages(t *testing.T) {
	s := read(t, "trivy-cosign-vuln.json", v1alpha1.PredicateCosignVuln)
	for _, f := range s.Findings {
		if f.ID == "CVE-2026-1111" && len(f.Packages) > 0 && f.Packages[0] == "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12.8" {
			return
		}
	}
	t.Fatalf("findings = %+v: CVE-2026-1111 should carry libssl3's package URL", s.Findings)
}
