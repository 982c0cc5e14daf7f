package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/check"
	"github.com/imagegate/imagegate/test/utils/registrytest"
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
