package verify_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// clock is a controllable clock for the verifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

var scanned = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

type attestFunc func(d name.Digest, statement []byte) error

// TestVulnerabilityAttestations runs the table through both storage formats (legacy
// .att tags and sigstore bundles) and both predicate types.
func TestVulnerabilityAttestations(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	release, _ := rt.NewKey()
	ci, _ := rt.NewKey()
	stranger, _ := rt.NewKey()
	ignoreUntil := metav1.NewTime(scanned.Add(48 * time.Hour))
	ignoreExpired := metav1.NewTime(scanned.Add(-time.Hour))
	rules := &v1alpha1.VerifyRules{
		Signers:         []v1alpha1.Signer{keySigner("release", release.PublicKeyPEM()), keySigner("ci", ci.PublicKeyPEM())},
		TransparencyLog: v1alpha1.TransparencyLogSkip,
		Attestations: []v1alpha1.AttestationRule{{
			Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln, Signers: []string{"ci"},
			Vulnerabilities: v1alpha1.VulnerabilityRules{
				MaxSeverity:   v1alpha1.SeverityHigh,
				MaxAgeSeconds: int32(86400),
				Scanners:      []string{"pkg:github/aquasecurity/trivy"},
				Ignore: []v1alpha1.IgnoredVulnerability{
					{ID: "CVE-2026-0001", Reason: "not reachable"},
					{ID: "CVE-2026-0002", Reason: "patch due", Expires: &ignoreUntil},
					{ID: "CVE-2026-0003", Reason: "was patched", Expires: &ignoreExpired},
				},
			},
		}},
	}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("no-criticals", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "no-criticals"}); e != "" {
		t.Fatal(e)
	}
	clk := &clock{t: scanned.Add(time.Hour)}
	trivy := func(finished time.Time, vulns ...rt.Vuln) func(name.Digest) []byte {
		return func(d name.Digest) []byte {
			return rt.AttestationStatement(d, rt.CosignVuln, rt.TrivyPredicate(finished, vulns...))
		}
	}
	for _, format := range []struct {
		name            string
		byCI, byRelease attestFunc
		unsigned        attestFunc
	}{
		{"bundles", func(d name.Digest, st []byte) error { return ci.Attest(d, st) }, func(d name.Digest, st []byte) error { return release.Attest(d, st) },
			func(d name.Digest, st []byte) error { return stranger.Attest(d, st) }},
		{"legacy .att", func(d name.Digest, st []byte) error { return ci.AttestLegacy(d, st) }, func(d name.Digest, st []byte) error { return release.AttestLegacy(d, st) },
			func(d name.Digest, st []byte) error { return rt.AttestUnsigned(d, st) }},
	} {
		t.Run(format.name, func(t *testing.T) {
			n := 0
			image := func(statements ...func(name.Digest) []byte) name.Digest {
				n++
				d := mustPush(t, reg, "acme/"+strings.ReplaceAll(format.name, " ", "")+"/app", "v"+string(rune('a'+n)))
				if err := release.Sign(d); err != nil {
					t.Fatal(err)
				}
				for _, st := range statements {
					if err := format.byCI(d, st(d)); err != nil {
						t.Fatal(err)
					}
				}
				return d
			}
			other := mustPush(t, reg, "acme/other", "1")
			cases := []struct {
				name  string
				image name.Digest
				want  string // "" admitted
			}{
				{"clean", image(trivy(scanned)), ""},
				{"high allowed", image(trivy(scanned, rt.Vuln{ID: "CVE-2026-1000", Severity: "HIGH"}, rt.Vuln{ID: "CVE-2026-1001", Severity: "LOW"})), ""},
				{"critical", image(trivy(scanned, rt.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"}, rt.Vuln{ID: "CVE-2026-2222", Severity: "CRITICAL"}, rt.Vuln{ID: "CVE-2026-1000", Severity: "HIGH"})),
					`not allowed by ClusterImagePolicy "no-criticals": its newest vulnerability scan (trivy 0.58.1, finished 2026-11-20T10:00:00Z) has 2 vulnerabilities above High: CVE-2026-1111 (Critical), CVE-2026-2222 (Critical)`},
				{"unknown counts as critical", image(trivy(scanned, rt.Vuln{ID: "CVE-2026-9999", Severity: "UNKNOWN"})), "CVE-2026-9999 (Critical)"},
				{"ignored", image(trivy(scanned, rt.Vuln{ID: "CVE-2026-0001", Severity: "CRITICAL"}, rt.Vuln{ID: "CVE-2026-0002", Severity: "CRITICAL"})), ""},
				{"ignore expired", image(trivy(scanned, rt.Vuln{ID: "CVE-2026-0003", Severity: "CRITICAL"})), "has 1 vulnerability above High: CVE-2026-0003 (Critical)"},
				{"stale", image(trivy(scanned.Add(-6 * 24 * time.Hour))), "finished 2026-11-14T10:00:00Z) is 6 days old, older than maxAgeSeconds 86400 (24h)"},
				{"newest decides (newer is dirty)", image(trivy(scanned.Add(-time.Hour)), trivy(scanned, rt.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"})), "CVE-2026-1111 (Critical)"},
				{"newest decides (newer is clean)", image(trivy(scanned.Add(-time.Hour), rt.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"}), trivy(scanned)), ""},
				{"unknown scanner", image(func(d name.Digest) []byte {
					return rt.AttestationStatement(d, rt.CosignVuln, []byte(`{"scanner":{"uri":"pkg:github/evil/scanner@1","result":{}},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`))
				}), `are by "pkg:github/evil/scanner@1", none a trusted scanner`},
				{"unreadable result", image(func(d name.Digest) []byte {
					return rt.AttestationStatement(d, rt.CosignVuln, []byte(`{"scanner":{"uri":"pkg:github/aquasecurity/trivy@0.58.1","version":"0.58.1","result":{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1","Severity":"BAD"}]}]}},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`))
				}), `attestation "scan": the vulnerability scan by trivy 0.58.1 cannot be read`},
				{"wrong subject", image(func(d name.Digest) []byte { return trivy(scanned)(other) }), `no attestation "scan" (https://cosign.sigstore.dev/attestation/vuln/v1) signed by a signer it trusts (tried: key "ci"; found 1 of that type, none verified`},
				{"none", image(), `no attestation "scan" (https://cosign.sigstore.dev/attestation/vuln/v1) signed by a signer it trusts (tried: key "ci"; found none of that type`},
			}
			// Signed by a signer of the policy that the rule does not accept, or by no one.
			byRelease := image()
			if err := format.byRelease(byRelease, trivy(scanned)(byRelease)); err != nil {
				t.Fatal(err)
			}
			cases = append(cases, struct {
				name  string
				image name.Digest
				want  string
			}{"wrong signer", byRelease, "found 1 of that type, none verified"})
			unsigned := image()
			if err := format.unsigned(unsigned, trivy(scanned)(unsigned)); err != nil {
				t.Fatal(err)
			}
			cases = append(cases, struct {
				name  string
				image name.Digest
				want  string
			}{"unsigned", unsigned, "found 1 of that type, none verified"})

			v := verify.New(verify.Options{Now: clk.Now})
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					d := decide(t, snap, v, c.image.String())
					got := messages(&d)
					if c.want == "" && got != "" {
						t.Fatalf("refused, want admitted:\n%s", got)
					}
					if c.want != "" && !strings.Contains(got, c.want) {
						t.Fatalf("got %q\nwant it to say %q", got, c.want)
					}
				})
			}
		})
	}
}

// TestCachedPassExpiresWithTheScan: a cached pass lasts no longer than the scan's maxAge or an
// ignored finding's exception, whichever ends first.
func TestCachedPassExpiresWithTheScan(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	key, _ := rt.NewKey()
	until := metav1.NewTime(scanned.Add(3 * time.Hour))
	rules := func(maxAge time.Duration) *v1alpha1.VerifyRules {
		return &v1alpha1.VerifyRules{
			Signers: []v1alpha1.Signer{keySigner("ci", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip,
			Attestations: []v1alpha1.AttestationRule{{Name: "scan", PredicateType: v1alpha1.PredicateInTotoVulns, Vulnerabilities: v1alpha1.VulnerabilityRules{
				MaxSeverity: v1alpha1.SeverityHigh, MaxAgeSeconds: int32((maxAge) / time.Second),
				Ignore: []v1alpha1.IgnoredVulnerability{{ID: "CVE-2026-0002", Reason: "patch due", Expires: &until}},
			}}},
		}
	}
	d := mustPush(t, reg, "acme/app", "1")
	if err := key.Sign(d); err != nil {
		t.Fatal(err)
	}
	// in-toto vulns v0.2 by Grype, with a CVSS score.
	if err := key.Attest(d, rt.AttestationStatement(d, rt.InTotoVulns, rt.InTotoVulnsPredicate("pkg:github/anchore/grype@0.84.0", scanned, rt.Vuln{ID: "CVE-2026-0002", Severity: "9.8"}))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		maxAge time.Duration
		until  time.Duration // when the pass must end, after the scan
		want   string
	}{
		{"maxAge first", 2 * time.Hour, 2 * time.Hour, "older than maxAgeSeconds 7200 (2h)"},
		{"exception first", 24 * time.Hour, 3 * time.Hour, "has 1 vulnerability above High: CVE-2026-0002 (Critical)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("p", rules(c.maxAge))}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
			// Five minutes before the end: within the verified result's own lifetime (10m).
			clk := &clock{t: scanned.Add(c.until - 5*time.Minute)}
			v := verify.New(verify.Options{Now: clk.Now})
			if got := decide(t, snap, v, d.String()); messages(&got) != "" {
				t.Fatalf("refused at first: %s", messages(&got))
			}
			before := reg.Requests()
			clk.Set(scanned.Add(c.until - time.Second))
			if got := decide(t, snap, v, d.String()); messages(&got) != "" || reg.Requests() != before {
				t.Fatalf("just before the end: %q, %d registry requests", messages(&got), reg.Requests()-before)
			}
			clk.Set(scanned.Add(c.until))
			if got := decide(t, snap, v, d.String()); !strings.Contains(messages(&got), c.want) {
				t.Fatalf("at the end: %q, want %q", messages(&got), c.want)
			}
		})
	}
}

// TestKeylessAttestationAndProvenance: a keyless attestation in a bundle, and a predicate
// that must only exist and be signed (SLSA provenance).
func TestKeylessAttestationAndProvenance(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	ss, err := rt.NewSigstore()
	if err != nil {
		t.Fatal(err)
	}
	rootJSON, err := ss.TrustedRootJSON()
	if err != nil {
		t.Fatal(err)
	}
	src := &sources{configMaps: map[string]*corev1.ConfigMap{"sigstore": {Data: map[string]string{"trusted_root.json": string(rootJSON)}}}}
	const issuer = "https://token.actions.githubusercontent.com"
	const subject = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
	const slsa = "https://slsa.dev/provenance/v1"
	rules := &v1alpha1.VerifyRules{
		Signers:     []v1alpha1.Signer{{Name: "gha", Keyless: v1alpha1.KeylessSigner{Identities: []v1alpha1.Identity{{Issuer: issuer, Subject: subject}}}}},
		TrustedRoot: v1alpha1.ConfigMapKeyReference{Name: "sigstore"},
		Attestations: []v1alpha1.AttestationRule{
			{Name: "provenance", PredicateType: slsa},
			{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh}},
		},
	}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("p", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "p"}); e != "" {
		t.Fatal(e)
	}
	sign := func(d name.Digest, predicateType string, predicate []byte, subj string) {
		t.Helper()
		if err := ss.SignBundle(d, rt.AttestationStatement(d, predicateType, predicate), subj, issuer); err != nil {
			t.Fatal(err)
		}
	}
	complete := mustPush(t, reg, "acme/app", "1")
	sign(complete, ctypes.CosignSignPredicateType, []byte(`{}`), subject)
	sign(complete, slsa, []byte(`{"buildDefinition":{},"runDetails":{}}`), subject)
	sign(complete, rt.CosignVuln, rt.TrivyPredicate(time.Now().Add(-time.Hour)), subject)
	noProvenance := mustPush(t, reg, "acme/app", "2")
	sign(noProvenance, ctypes.CosignSignPredicateType, []byte(`{}`), subject)
	sign(noProvenance, rt.CosignVuln, rt.TrivyPredicate(time.Now().Add(-time.Hour)), subject)
	forkScan := mustPush(t, reg, "acme/app", "3")
	sign(forkScan, ctypes.CosignSignPredicateType, []byte(`{}`), subject)
	sign(forkScan, slsa, []byte(`{}`), subject)
	sign(forkScan, rt.CosignVuln, rt.TrivyPredicate(time.Now().Add(-time.Hour)), "https://github.com/evil-acme/app/.github/workflows/release.yml@refs/heads/main")

	v := verify.New(verify.Options{})
	for _, c := range []struct {
		image name.Digest
		want  string
	}{
		{complete, ""},
		{noProvenance, `no attestation "provenance" (https://slsa.dev/provenance/v1) signed by a signer it trusts (tried: keyless "gha"; found none of that type`},
		{forkScan, `no attestation "scan"`},
	} {
		d := decide(t, snap, v, c.image.String())
		got := messages(&d)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.image, got, c.want)
		}
	}
	// The CLI's report: what each rule found.
	pv := snap.Evaluate(&policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "f", Ref: complete.String()}}}).Pending
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := v.Outcomes(ctx, pv)[0]
	if o.Reason != "" || len(o.Attestations) != 2 || o.Attestations[1].Scan == nil || o.Attestations[1].Scan.Name() != "trivy 0.58.1" {
		t.Fatalf("outcome = %+v", o)
	}
}

// TestProvenanceAndConditions: what provenance says, judged through both storage formats,
// with CEL conditions, and the first accepted provenance in the CLI's report.
func TestProvenanceAndConditions(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	key, _ := rt.NewKey()
	rules := &v1alpha1.VerifyRules{
		Signers: []v1alpha1.Signer{keySigner("ci", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip,
		Attestations: []v1alpha1.AttestationRule{{
			Name: "built-by-release", PredicateType: rt.SLSAProvenanceV1,
			Provenance: v1alpha1.ProvenanceRules{
				BuilderID:        "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/*",
				SourceRepository: "https://github.com/acme/app", SourceRef: "refs/tags/v*",
			},
			Conditions: []v1alpha1.AttestationCondition{{
				Expression: "predicate.buildDefinition.internalParameters.github.runner_environment == 'github-hosted'",
				Message:    "must be built on GitHub-hosted runners",
			}},
		}},
	}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("provenance", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "provenance"}); e != "" {
		t.Fatal(e)
	}
	release := rt.Build{Repository: "https://github.com/acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3", Event: "push"}
	fork := release
	fork.Repository = "https://github.com/evil/app"
	selfHosted := rt.GitHubProvenance(release)
	selfHosted = []byte(strings.Replace(string(selfHosted), `"github-hosted"`, `"self-hosted"`, 1))
	n := 0
	image := func(attest func(name.Digest, []byte) error, predicates ...[]byte) name.Digest {
		n++
		d := mustPush(t, reg, "acme/app", "v"+string(rune('a'+n)))
		if err := key.Sign(d); err != nil {
			t.Fatal(err)
		}
		for _, p := range predicates {
			if err := attest(d, rt.AttestationStatement(d, rt.SLSAProvenanceV1, p)); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	v := verify.New(verify.Options{})
	for _, format := range []struct {
		name   string
		attest func(name.Digest, []byte) error
	}{{"bundles", func(d name.Digest, st []byte) error { return key.Attest(d, st) }}, {"legacy .att", func(d name.Digest, st []byte) error { return key.AttestLegacy(d, st) }}} {
		for _, c := range []struct {
			name  string
			image name.Digest
			want  string
		}{
			{"release", image(format.attest, rt.GitHubProvenance(release)), ""},
			{"from a fork", image(format.attest, rt.GitHubProvenance(fork)),
				`not allowed by ClusterImagePolicy "provenance": attestation "built-by-release": provenance builderID is "https://github.com/evil/app/.github/workflows/release.yml@refs/tags/v1.2.3"; want one matching "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/*"`},
			{"condition false", image(format.attest, selfHosted), `attestation "built-by-release": must be built on GitHub-hosted runners`},
			{"one of two meets the rule", image(format.attest, rt.GitHubProvenance(fork), rt.GitHubProvenance(release)), ""},
			{"neither of two", image(format.attest, rt.GitHubProvenance(fork), selfHosted), "(and 1 more verified attestation of that type fails the rule)"},
		} {
			t.Run(format.name+"/"+c.name, func(t *testing.T) {
				o := decideAndReport(t, snap, v, c.image, c.want)
				if o == nil {
					return
				}
				if len(o.Attestations) != 1 || o.Attestations[0].Provenance == nil || o.Attestations[0].Provenance.SourceRef != "refs/tags/v1.2.3" {
					t.Fatalf("report = %+v", o.Attestations)
				}
			})
		}
	}
}

// TestVEXThroughTheRegistry: a Critical finding ruled out by an OpenVEX document attached to
// the image, in both storage formats; a document by a signer the rule does not trust, or
// about another image, rules nothing out.
func TestVEXThroughTheRegistry(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	release, _ := rt.NewKey()
	vendor, _ := rt.NewKey()
	stranger, _ := rt.NewKey()
	rules := &v1alpha1.VerifyRules{
		Signers:         []v1alpha1.Signer{keySigner("release", release.PublicKeyPEM()), keySigner("vendor", vendor.PublicKeyPEM())},
		TransparencyLog: v1alpha1.TransparencyLogSkip,
		Attestations: []v1alpha1.AttestationRule{{
			Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln, Signers: []string{"release"},
			Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, VEX: v1alpha1.VEXRules{Signers: []string{"vendor"}}},
		}},
	}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("vex", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "vex"}); e != "" {
		t.Fatal(e)
	}
	clk := &clock{t: scanned.Add(time.Hour)}
	n := 0
	image := func(vex func(d name.Digest) (*rt.Key, []byte, bool)) name.Digest {
		n++
		d := mustPush(t, reg, "acme/vexed", "v"+string(rune('a'+n)))
		if err := release.Sign(d); err != nil {
			t.Fatal(err)
		}
		if err := release.Attest(d, rt.AttestationStatement(d, rt.CosignVuln, rt.TrivyPredicate(scanned, rt.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"}))); err != nil {
			t.Fatal(err)
		}
		if vex != nil {
			k, doc, legacy := vex(d)
			st := rt.AttestationStatement(d, rt.OpenVEXType, doc)
			attest := k.Attest
			if legacy {
				attest = k.AttestLegacy
			}
			if err := attest(d, st); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	notAffected := func(product string) []byte {
		return rt.OpenVEX("https://acme.example/vex/1", scanned, rt.VEXStatement{Vulnerability: "CVE-2026-1111", Product: product, Status: "not_affected", Justification: "vulnerable_code_not_in_execute_path"})
	}
	purlOf := func(d name.Digest) string {
		return "pkg:oci/vexed@" + strings.Replace(d.DigestStr(), ":", "%3A", 1) + "?repository_url=" + strings.ReplaceAll(d.Context().Name(), "/", "%2F")
	}
	// CycloneDX VEX, as `cosign attest --type cyclonedx` stores a BOM.
	cyclone := image(nil)
	cdxDoc := `{"bomFormat":"CycloneDX","specVersion":"1.6","serialNumber":"urn:uuid:0b4f5d6c-7a8e-4f00-9122-334455667788","version":1,
		"metadata":{"timestamp":"2026-11-20T10:00:00Z","component":{"type":"container","bom-ref":"image","name":"vexed","purl":"` + purlOf(cyclone) + `"}},
		"vulnerabilities":[{"id":"CVE-2026-1111","analysis":{"state":"not_affected","justification":"code_not_reachable"},"affects":[{"ref":"image"}]}]}`
	if err := vendor.Attest(cyclone, rt.AttestationStatement(cyclone, "https://cyclonedx.org/bom", []byte(cdxDoc))); err != nil {
		t.Fatal(err)
	}
	v := verify.New(verify.Options{Now: clk.Now})
	for _, c := range []struct {
		name  string
		image name.Digest
		want  string
	}{
		{"no VEX", image(nil), "has 1 vulnerability above High: CVE-2026-1111 (Critical)"},
		{"ruled out (CycloneDX)", cyclone, ""},
		{"ruled out (bundle)", image(func(d name.Digest) (*rt.Key, []byte, bool) { return vendor, notAffected(purlOf(d)), false }), ""},
		{"ruled out (legacy .att)", image(func(d name.Digest) (*rt.Key, []byte, bool) { return vendor, notAffected(d.String()), true }), ""},
		{"by a stranger", image(func(d name.Digest) (*rt.Key, []byte, bool) { return stranger, notAffected(purlOf(d)), false }), "CVE-2026-1111 (Critical)"},
		{"by the scan's signer, not a VEX signer", image(func(d name.Digest) (*rt.Key, []byte, bool) { return release, notAffected(purlOf(d)), false }), "CVE-2026-1111 (Critical)"},
		{"about another image", image(func(d name.Digest) (*rt.Key, []byte, bool) {
			return vendor, notAffected("pkg:oci/other?repository_url=" + strings.ReplaceAll(d.Context().RegistryStr()+"/acme/other", "/", "%2F")), false
		}), "CVE-2026-1111 (Critical)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := decideAndReport(t, snap, v, c.image, c.want)
			if o == nil {
				return
			}
			if len(o.Attestations) != 1 || len(o.Attestations[0].Verdict.RuledOut) != 1 || o.Attestations[0].Verdict.RuledOut[0].Document == "" {
				t.Fatalf("report = %+v", o.Attestations)
			}
			// The admission says what VEX ruled out, and by which statement.
			d := decide(t, snap, v, c.image.String())
			doc := "https://acme.example/vex/1"
			if c.image == cyclone {
				doc = "urn:uuid:0b4f5d6c-7a8e-4f00-9122-334455667788"
			}
			want := `spec.containers[0].image: image "` + c.image.String() + `" is admitted by ClusterImagePolicy "vex": attestation "scan": VEX ruled out 1 finding above maxSeverity: CVE-2026-1111 (not_affected, ` + doc + `)`
			if notes := d.NoteMessages(); len(notes) != 1 || notes[0] != want {
				t.Fatalf("notes = %q\nwant %q", notes, want)
			}
		})
	}
}

// decideAndReport decides on the image and checks the message says want ("": admitted); for
// an admitted image it returns the outcome the CLI reports, else nil.
func decideAndReport(t *testing.T, snap *policy.Snapshot, v *verify.Verifier, image name.Digest, want string) *verify.Outcome {
	t.Helper()
	d := decide(t, snap, v, image.String())
	got := messages(&d)
	if (want == "") != (got == "") || !strings.Contains(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if want != "" {
		return nil
	}
	pv := snap.Evaluate(&policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "f", Ref: image.String()}}}).Pending
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return v.Outcomes(ctx, pv)[0]
}
