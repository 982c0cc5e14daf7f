package attest

import (
	"strings"
	"testing"

	"github.com/openvex/go-vex/pkg/vex"
)

// TestCycloneDXVEX reads VEX in CycloneDX, in the layout of the specification's examples:
// analysis states, affects refs to the BOM's components, to the image's package URL, and as
// BOM-Links.
func TestCycloneDXVEX(t *testing.T) {
	const repo = "ghcr.io/acme/app"
	hexDigest := strings.Repeat("ab", 32)
	digest := "sha256:" + hexDigest
	purl := "pkg:oci/app@sha256%3A" + hexDigest + "?repository_url=ghcr.io%2Facme%2Fapp"
	doc := `{
  "bomFormat": "CycloneDX",
  "specVersion": "1.6",
  "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
  "version": 1,
  "metadata": {
    "timestamp": "2026-11-01T00:00:00Z",
    "authors": [{"name": "Acme Security"}],
    "component": {"type": "container", "bom-ref": "acme-app", "name": "app", "purl": "` + purl + `"}
  },
  "vulnerabilities": [
    {"id": "CVE-2026-1111", "bom-ref": "vex-1111",
     "analysis": {"state": "not_affected", "justification": "code_not_reachable", "response": ["will_not_fix"], "detail": "the parser is not linked"},
     "affects": [{"ref": "acme-app"}]},
    {"id": "CVE-2026-2222",
     "analysis": {"state": "resolved", "lastUpdated": "2026-11-02T00:00:00Z"},
     "affects": [{"ref": "urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/1#acme-app"}]},
    {"id": "CVE-2026-3333",
     "analysis": {"state": "exploitable"},
     "affects": [{"ref": "acme-app"}]},
    {"id": "CVE-2026-4444",
     "analysis": {"state": "false_positive"},
     "affects": [{"ref": "pkg:oci/other?repository_url=ghcr.io%2Facme%2Fother"}]},
    {"id": "CVE-2026-5555",
     "affects": [{"ref": "acme-app"}]}
  ]
}`
	d, err := ReadVEXAs(PredicateCycloneDXVEX, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	x := NewVEX(repo, digest, []*vex.VEX{d})
	for id, want := range map[string]string{
		"CVE-2026-1111": "not_affected", // the image, by the BOM's component
		"CVE-2026-2222": "fixed",        // the image, by a BOM-Link
		"CVE-2026-3333": "affected",
		"CVE-2026-4444": "", // another image
		"CVE-2026-5555": "", // no analysis: says nothing
	} {
		got := ""
		if dec := x.Decide(&Finding{ID: id, Severity: Critical}); dec != nil {
			got = dec.Status
			if id == "CVE-2026-1111" && (dec.Document != "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79" || dec.Statement != "vex-1111" || dec.Author != "Acme Security") {
				t.Errorf("%s: decision %+v", id, dec)
			}
		}
		if got != want {
			t.Errorf("%s: %q, want %q", id, got, want)
		}
	}
	if _, err := ReadVEXAs(PredicateCycloneDXBOM, []byte(`{"bomFormat": 7}`)); err == nil || !strings.Contains(err.Error(), "CycloneDX document cannot be read") {
		t.Fatalf("err = %v", err)
	}
}
