package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	ctypes "github.com/sigstore/cosign/v3/pkg/types"

	"github.com/imagegate/imagegate/internal/check"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
	"github.com/imagegate/imagegate/test/utils/tuftest"
)

// imagegate check verifies as the webhooks do: the tag of a Deployment's template is resolved
// in a real registry and the signature verified at its digest; --offline says, per image,
// that it did not.
func TestCheckVerifiesSignatures(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	d, err := reg.Push("acme/app", "1.4")
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(d); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push("acme/tool", "2"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n    ")
	policies := write(t, dir, "policy.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: signed
spec:
  verify:
    transparencyLog: Skip
    signers:
    - name: release
      key:
        secretRef:
          name: release-key
---
apiVersion: v1
kind: Secret
metadata:
  name: release-key
  namespace: imagegate-system
stringData:
  cosign.pub: |
    `+pem+"\n")
	deployment := func(image string) string {
		return write(t, dir, "deploy.yaml", `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
      - name: app
        image: `+image+"\n")
	}

	code, stdout, stderr := imagegate(t, "", "check", "--policy", policies, deployment(reg.Host+"/acme/app:1.4"))
	if code != check.ExitAdmitted {
		t.Errorf("signed image: exit %d, want 0\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = imagegate(t, "", "check", "--policy", policies, deployment(reg.Host+"/acme/tool:2"))
	if code != check.ExitDenied || !strings.Contains(stdout, `is not allowed by ClusterImagePolicy "signed": no signature by a trusted signer (tried: key "release"; found no signature`) {
		t.Errorf("unsigned image: exit %d, want 1 with the reason\n%s", code, stdout)
	}
	code, stdout, _ = imagegate(t, "", "check", "--offline", "--policy", policies, deployment(reg.Host+"/acme/tool:2"))
	if code != check.ExitAdmitted || !strings.Contains(stdout, `not verified: spec.template.spec.containers[0].image: image "`+reg.Host+`/acme/tool:2": --offline: verify rules skipped`) {
		t.Errorf("--offline: exit %d, want 0 and a not-verified line\n%s", code, stdout)
	}
	// A registry that cannot be reached refuses (fail closed), saying why.
	reg.Close()
	code, stdout, _ = imagegate(t, "", "check", "--policy", policies, deployment(reg.Host+"/acme/app:1.4"))
	if code != check.ExitDenied || !strings.Contains(stdout, "could not be pinned to a digest: the registry "+reg.Host+" failed while resolving the tag 1.4") {
		t.Errorf("registry down: exit %d, want 1 naming the registry\n%s", code, stdout)
	}
	// The denial says what failed, not that a mutating webhook (there is none here) did not run.
	if !strings.Contains(stdout, `is not allowed by ClusterImagePolicy "signed": it could not be pinned to a digest: the registry `) || strings.Contains(stdout, "mutating webhook") {
		t.Errorf("registry down: the denial should say the image could not be pinned:\n%s", stdout)
	}
}

// imagegate check -o json gives, per image, what each attestation rule found: the scan's
// scanner and time, the findings that refuse, those ignored; CI gates on what the cluster
// will enforce.
func TestCheckReportsScanFindings(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	finished := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	push := func(tag string, vulns ...registrytest.Vuln) {
		t.Helper()
		d, err := reg.Push("acme/app", tag)
		if err != nil {
			t.Fatal(err)
		}
		if err := key.Sign(d); err != nil {
			t.Fatal(err)
		}
		if err := key.Attest(d, registrytest.AttestationStatement(d, registrytest.CosignVuln, registrytest.TrivyPredicate(finished, vulns...))); err != nil {
			t.Fatal(err)
		}
	}
	push("clean", registrytest.Vuln{ID: "CVE-2026-0001", Severity: "CRITICAL"})
	push("dirty", registrytest.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"}, registrytest.Vuln{ID: "CVE-2026-2222", Severity: "HIGH"})
	dir := t.TempDir()
	pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
	policies := write(t, dir, "policy.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: no-criticals
spec:
  verify:
    transparencyLog: Skip
    signers:
    - name: ci
      key:
        publicKey: |
          `+pem+`
    attestations:
    - name: scan
      predicateType: https://cosign.sigstore.dev/attestation/vuln/v1
      vulnerabilities:
        maxSeverity: High
        maxAgeSeconds: 86400
        ignore:
        - id: CVE-2026-0001
          reason: not reachable from the network
          expires: "2099-01-01T00:00:00Z"
`)
	pod := func(tag string) string {
		return write(t, dir, tag+".yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: default}\nspec:\n  containers:\n  - name: app\n    image: "+reg.Host+"/acme/app:"+tag+"\n")
	}
	code, stdout, stderr := imagegate(t, "", "check", "-o", "json", "--policy", policies, pod("clean"))
	if code != check.ExitAdmitted {
		t.Fatalf("clean: exit %d\n%s%s", code, stdout, stderr)
	}
	var rep check.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	v := rep.Objects[0].Verified
	if len(v) != 1 || !v[0].Verified || len(v[0].Attestations) != 1 || v[0].Attestations[0].Scan == nil ||
		v[0].Attestations[0].Scan.Name() != "trivy 0.58.1" || !v[0].Attestations[0].Scan.Finished.Equal(finished) ||
		fmt.Sprint(v[0].Attestations[0].Verdict.Ignored) != "[CVE-2026-0001]" || !v[0].ScanExpires.Equal(finished.Add(24*time.Hour)) {
		t.Fatalf("clean: verified = %s", stdout)
	}
	code, stdout, _ = imagegate(t, "", "check", "-o", "json", "--policy", policies, pod("dirty"))
	if code != check.ExitDenied || !strings.Contains(stdout, `"refusing": [`) || !strings.Contains(stdout, `"id": "CVE-2026-1111",`) || !strings.Contains(stdout, `"severity": "Critical"`) {
		t.Fatalf("dirty: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = imagegate(t, "", "check", "--policy", policies, pod("dirty"))
	if code != check.ExitDenied || !strings.Contains(stdout, "has 1 vulnerability above High: CVE-2026-1111 (Critical)") {
		t.Fatalf("dirty, text: exit %d\n%s", code, stdout)
	}
}

// imagegate check reads a verify rule's tufRoots as the manager does: the trusted root a TUF
// repository publishes, from the initial root.json in the policy files' ConfigMap.
func TestCheckTUFRoots(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	ss, err := registrytest.NewSigstore()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ss.TrustedRootJSON()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := tuftest.New(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	signed, err := reg.Push("acme/app", "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ss.SignBundle(signed, registrytest.Statement(signed, ctypes.CosignSignPredicateType), "ci@acme.example", "https://issuer.example"); err != nil {
		t.Fatal(err)
	}
	unsigned, err := reg.Push("acme/app", "2")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := strings.ReplaceAll(string(repo.InitialRoot()), "\n", "")
	policies := write(t, dir, "policy.yaml", fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: tuf
spec:
  verify:
    tufRoots:
    - mirror: %s
      root: {name: tuf-root}
    signers:
    - name: ci
      keyless:
        identities: [{issuer: https://issuer.example, subject: ci@acme.example}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: tuf-root
  namespace: imagegate-system
data:
  root.json: '%s'
`, repo.URL, root))
	pod := func(image string) string {
		return write(t, dir, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - {name: app, image: "+image+"}\n")
	}
	run := func(image string) *check.Report {
		r, err := check.Run(context.Background(), check.Options{PolicyPaths: []string{policies}, Paths: []string{pod(image)}, TUF: verify.TUFOptions{HTTPClient: repo.Client()}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := run(signed.String()); r.ExitCode() != check.ExitAdmitted {
		b, _ := json.Marshal(r)
		t.Errorf("signed under the repository's root: exit %d\n%s", r.ExitCode(), b)
	}
	if r := run(unsigned.String()); r.ExitCode() != check.ExitDenied {
		b, _ := json.Marshal(r)
		t.Errorf("unsigned: exit %d\n%s", r.ExitCode(), b)
	}
	// Without the client that trusts the local repository, the fetch fails: an input error
	// naming the repository, not a verdict.
	r, err := check.Run(context.Background(), check.Options{PolicyPaths: []string{policies}, Paths: []string{pod(signed.String())}})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(r); r.ExitCode() == check.ExitAdmitted || !strings.Contains(string(b), "the trusted root of "+repo.URL+" could not be fetched from its TUF repository") {
		t.Errorf("an unreachable repository: exit %d\n%s", r.ExitCode(), b)
	}
}

// imagegate check verifies Notary signatures as the webhooks do: the trust store from a
// ConfigMap in the policy files, the image's tag resolved and its signature verified at the
// digest.
func TestCheckNotation(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	ca, err := notationtest.NewCA("Acme Release CA")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := notationtest.NewCA("Acme Release CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for tag, issuer := range map[string]*notationtest.CA{"1": ca, "2": rogue} {
		s, err := issuer.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		d, err := reg.Push("acme/app", tag)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SignWithNotation(context.Background(), d, notationtest.JWS); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	policies := write(t, dir, "policy.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: notation
spec:
  verify:
    signers:
    - name: release
      notation:
        trustStores:
        - {type: ca, name: acme-release, configMapRef: {name: acme-release-ca}}
        trustedIdentities: ["x509.subject: `+notationtest.Subject("release")+`"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: acme-release-ca
  namespace: imagegate-system
data:
  ca.crt: |
    `+strings.ReplaceAll(strings.TrimSpace(ca.PEM()), "\n", "\n    ")+"\n")
	pod := func(image string) string {
		return write(t, dir, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - {name: app, image: "+image+"}\n")
	}
	code, stdout, stderr := imagegate(t, "", "check", "--policy", policies, pod(reg.Host+"/acme/app:1"))
	if code != check.ExitAdmitted {
		t.Errorf("signed by the trusted CA: exit %d, want 0\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = imagegate(t, "", "check", "--policy", policies, pod(reg.Host+"/acme/app:2"))
	if code != check.ExitDenied || !strings.Contains(stdout, `no signature by a trusted signer (tried: notation "release" (1 Notary signature found: certificate chain not trusted by trust store "acme-release"`) {
		t.Errorf("signed by another CA: exit %d, want 1 with the reason\n%s", code, stdout)
	}
}
