package registrytest

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v3/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	"github.com/sigstore/cosign/v3/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
)

// Predicate types of vulnerability scans.
const (
	CosignVuln  = "https://cosign.sigstore.dev/attestation/vuln/v1"
	InTotoVulns = "https://in-toto.io/attestation/vulns/v0.2"
)

// AttestationStatement is the in-toto statement `cosign attest` signs: subject the digest,
// the predicate as given.
func AttestationStatement(subject name.Digest, predicateType string, predicate []byte) []byte {
	alg, hexDigest, _ := strings.Cut(subject.DigestStr(), ":")
	st, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": subject.Context().String(), "digest": map[string]string{alg: hexDigest}}},
		"predicateType": predicateType,
		"predicate":     json.RawMessage(predicate),
	})
	if err != nil {
		panic(err)
	}
	return st
}

// Vuln is one finding of a scan: an ID and Trivy's severity (CRITICAL, HIGH, MEDIUM, LOW,
// UNKNOWN).
type Vuln struct {
	ID, Severity string
	// PURL is the package it is in (Trivy's PkgIdentifier.PURL); empty: a Debian libexample.
	PURL string
}

// TrivyPredicate is what `trivy image --format cosign-vuln` writes for a scan that finished
// at finished with these findings (Trivy 0.58.1's layout: cosign's vuln/v1 predicate whose
// scanner.result is Trivy's JSON report, schema version 2).
func TrivyPredicate(finished time.Time, vulns ...Vuln) []byte {
	var vs []map[string]any
	for _, v := range vulns {
		purl := v.PURL
		if purl == "" {
			purl = "pkg:deb/debian/libexample@1.0.0?arch=amd64&distro=debian-12.8"
		}
		vs = append(vs, map[string]any{
			"VulnerabilityID": v.ID, "PkgID": "libexample@1.0.0", "PkgName": "libexample",
			"PkgIdentifier":    map[string]any{"PURL": purl, "UID": "5a4e0c4bb0cd5c1b"},
			"InstalledVersion": "1.0.0", "FixedVersion": "1.0.1",
			"Status": "fixed", "Severity": v.Severity, "PrimaryURL": "https://avd.aquasec.com/nvd/" + strings.ToLower(v.ID),
		})
	}
	result := map[string]any{
		"SchemaVersion": 2, "CreatedAt": finished.Format(time.RFC3339Nano), "ArtifactName": "image", "ArtifactType": "container_image",
		"Metadata": map[string]any{"OS": map[string]any{"Family": "debian", "Name": "12.8"}},
		"Results":  []any{map[string]any{"Target": "image (debian 12.8)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": vs}},
	}
	p, err := json.Marshal(map[string]any{
		"invocation": map[string]any{"parameters": nil, "uri": "", "event_id": "", "builder.id": ""},
		"scanner": map[string]any{
			"uri": "pkg:github/aquasecurity/trivy@0.58.1", "version": "0.58.1",
			"db": map[string]any{"uri": "", "version": ""}, "result": result,
		},
		"metadata": map[string]any{"scanStartedOn": finished.Add(-2 * time.Second).Format(time.RFC3339), "scanFinishedOn": finished.Format(time.RFC3339)},
	})
	if err != nil {
		panic(err)
	}
	return p
}

// InTotoVulnsPredicate is an in-toto vulns v0.2 predicate by the scanner with this URI; each
// finding's severity is written as a score (a name or a CVSS number).
func InTotoVulnsPredicate(scannerURI string, finished time.Time, vulns ...Vuln) []byte {
	result := []any{}
	for _, v := range vulns {
		result = append(result, map[string]any{"id": v.ID, "severity": []any{map[string]string{"method": "nvd", "score": v.Severity}}})
	}
	p, err := json.Marshal(map[string]any{
		"scanner": map[string]any{
			"uri": scannerURI, "version": "", "db": map[string]any{"lastUpdate": finished.Add(-time.Hour).Format(time.RFC3339)}, "result": result,
		},
		"metadata": map[string]any{"scanStartedOn": finished.Add(-time.Minute).Format(time.RFC3339), "scanFinishedOn": finished.Format(time.RFC3339)},
	})
	if err != nil {
		panic(err)
	}
	return p
}

// Attest attests the image at digest as `cosign attest --key` does in cosign v3: statement
// in a sigstore bundle stored as a referrer (SignBundle).
func (k *Key) Attest(digest name.Digest, statement []byte, c ...Credentials) error {
	return k.SignBundle(digest, statement, c...)
}

// AttestLegacy attests the image at digest as `cosign attest --key` did before bundles: a
// DSSE envelope over the statement, a layer of the sha256-<hex>.att tag annotated with its
// predicate type. No transparency log entry.
func (k *Key) AttestLegacy(digest name.Digest, statement []byte, c ...Credentials) error {
	return k.attestLegacy(digest, statement, statement, c...)
}

func (k *Key) attestLegacy(digest name.Digest, statement, signed []byte, c ...Credentials) error {
	o := credentials(c).oci()
	sig, err := k.sign(dssePAE(ctypes.IntotoPayloadType, signed))
	if err != nil {
		return err
	}
	env, err := json.Marshal(map[string]any{
		"payloadType": ctypes.IntotoPayloadType,
		"payload":     base64.StdEncoding.EncodeToString(statement),
		"signatures":  []any{map[string]string{"keyid": "", "sig": base64.StdEncoding.EncodeToString(sig)}},
	})
	if err != nil {
		return err
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	if err := json.Unmarshal(statement, &st); err != nil {
		return err
	}
	att, err := static.NewAttestation(env, static.WithAnnotations(map[string]string{"predicateType": st.PredicateType}))
	if err != nil {
		return err
	}
	se := ociremote.SignedUnknown(digest, o)
	se, err = mutate.AttachAttestationToEntity(se, att)
	if err != nil {
		return err
	}
	return ociremote.WriteAttestations(digest.Repository, se, o)
}

// AttestUnsigned stores statement as a legacy attestation with no valid signature (an
// envelope whose signature is over other bytes), as anyone who can push to the repository can.
func AttestUnsigned(digest name.Digest, statement []byte, c ...Credentials) error {
	k, err := NewKey()
	if err != nil {
		return err
	}
	return k.attestLegacy(digest, statement, []byte("not the statement"), c...)
}
