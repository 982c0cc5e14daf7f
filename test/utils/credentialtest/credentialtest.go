// Package credentialtest builds the test kubelet image credential provider plugin
// (internal/credentials/testdata/plugin) and writes configs that name it.
package credentialtest

import (
	"os"
	"os/exec"
	"path/filepath"
)

// TB is what the helpers need of a test: testing.TB, or Ginkgo's GinkgoT().
type TB interface {
	Helper()
	TempDir() string
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Name is the plugin's file name in the bin directory Plugin returns.
const Name = "fake-provider"

// Plugin builds the plugin into a new bin directory and returns the directory.
func Plugin(tb TB) string {
	tb.Helper()
	dir := tb.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, Name), "github.com/imagegate/imagegate/internal/credentials/testdata/plugin").CombinedOutput()
	if err != nil {
		tb.Fatalf("building the credential provider plugin: %v\n%s", err, out)
	}
	return dir
}

// Config writes a CredentialProviderConfig in which the plugin answers for host with user
// and password, and returns its path.
func Config(tb TB, host, user, password string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "config.yaml")
	body := `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: ` + Name + `
  matchImages: ["` + host + `"]
  defaultCacheDuration: 10m
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  env:
  - {name: PLUGIN_USER, value: ` + user + `}
  - {name: PLUGIN_PASSWORD, value: ` + password + `}
`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
