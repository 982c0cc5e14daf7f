package main

import (
	"strings"
	"testing"

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
}
