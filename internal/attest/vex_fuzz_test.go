package attest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openvex/go-vex/pkg/vex"
	"github.com/package-url/packageurl-go"

	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// FuzzVEX feeds arbitrary OpenVEX and CycloneDX documents to the readers and to Decide for one image and
// finding. Whatever the bytes: no panic; a finding is ruled out only by a statement whose
// status is not_affected or fixed, about that vulnerability (by name or alias), one of whose
// products names this image by its digest, its reference, or an OCI package URL of its name
// (and its digest, when the URL has a version) with no qualifier that is not this image's.
func FuzzVEX(f *testing.F) {
	const repo = "ghcr.io/acme/app"
	hexDigest := strings.Repeat("ab", 32)
	digest := "sha256:" + hexDigest
	purl := "pkg:oci/app@sha256%3A" + hexDigest + "?repository_url=ghcr.io%2Facme%2Fapp"
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f.Add(rt.OpenVEX("d", t0, rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: purl, Status: vex.StatusNotAffected, Justification: vex.ComponentNotPresent}), false)
	f.Add(rt.OpenVEX("d", t0, rt.VEXStatement{Vulnerability: "GHSA-x", Aliases: []string{"CVE-2026-1111"}, Product: repo + "@" + digest, Status: vex.StatusFixed}), false)
	f.Add(rt.OpenVEX("d", t0, rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: "pkg:oci/app?repository_url=ghcr.io%2Fevil%2Fapp", Status: vex.StatusNotAffected}), false)
	f.Add([]byte(`{"statements":[{"vulnerability":{"name":"CVE-2026-1111"},"products":[{"@id":"","hashes":{"sha-256":"`+hexDigest+`"}}],"status":"fixed"}]}`), false)
	f.Add([]byte(`{"statements":[{"vulnerability":{"name":"CVE-2026-1111"},"products":[{"identifiers":{"purl":"pkg:oci/app"}}],"status":"fixed"}]}`), false)
	f.Add([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","version":1,"metadata":{"component":{"type":"container","bom-ref":"i","name":"app","purl":"`+purl+`"}},
		"vulnerabilities":[{"id":"CVE-2026-1111","analysis":{"state":"not_affected"},"affects":[{"ref":"i"},{"ref":"urn:cdx:x/1#i"},{"ref":"pkg:oci/app"}]}]}`), true)
	finding := &Finding{ID: "CVE-2026-1111", Severity: Critical, Packages: []string{"pkg:deb/debian/libssl3@3"}}
	names := func(id string) bool {
		p, err := packageurl.FromString(id)
		if err != nil {
			return id == repo+"@"+digest || id == hexDigest
		}
		if p.Type != packageurl.TypeOCI || p.Namespace != "" || p.Name != "app" || (p.Version != "" && p.Version != digest) {
			return false
		}
		for k, v := range p.Qualifiers.Map() {
			if k != "repository_url" || v != repo {
				return false
			}
		}
		return true
	}
	f.Fuzz(func(t *testing.T, doc []byte, cyclonedx bool) {
		pt := PredicateOpenVEX
		if cyclonedx {
			pt = PredicateCycloneDXBOM
		}
		d, err := ReadVEXAs(pt, doc)
		if err != nil {
			return
		}
		got := NewVEX(repo, digest, []*vex.VEX{d}).Decide(finding)
		if got == nil || !got.RulesOut() {
			return
		}
		for _, st := range d.Statements {
			about := string(st.Vulnerability.Name) == finding.ID || slices.Contains(st.Vulnerability.Aliases, vex.VulnerabilityID(finding.ID))
			if string(st.Status) != got.Status || !about {
				continue
			}
			for _, p := range st.Products {
				ids := []string{p.ID}
				for _, id := range p.Identifiers {
					ids = append(ids, id)
				}
				for _, h := range p.Hashes {
					ids = append(ids, string(h))
				}
				if slices.ContainsFunc(ids, names) {
					return
				}
			}
		}
		t.Fatalf("ruled out by %+v, which names neither this image nor this vulnerability", got)
	})
}
