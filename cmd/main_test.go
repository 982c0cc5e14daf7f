package main

import (
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/podspec"
)

// The manager's excluded namespaces are the CLI's and the webhook configuration's (podspec
// ties those), under the same flag name.
func TestExcludedNamespacesFlag(t *testing.T) {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	bindFlags(fs)
	f := fs.Lookup(podspec.ExcludedNamespacesFlag)
	if f == nil {
		t.Fatalf("the manager has no --%s", podspec.ExcludedNamespacesFlag)
	}
	if want := podspec.DefaultExcludedNamespacesValue(); f.DefValue != want {
		t.Errorf("--%s defaults to %q, want %q", f.Name, f.DefValue, want)
	}
}

// `make run` passes no certificate: the manager makes one that the webhook server can load.
func TestSelfSignedCertificate(t *testing.T) {
	dir, err := selfSignedCertificate("tls.crt", "tls.key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		t.Fatalf("the generated pair does not load: %v", err)
	}
}

// --webhook-client-ca: a file without a certificate is refused with its name; a CA file gives
// the option that requires client certificates.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := clientCertificates(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("a file without a certificate: %v", err)
	}
	if _, err := clientCertificates(filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("a missing file was accepted")
	}
	certDir, err := selfSignedCertificate("tls.crt", "tls.key")
	if err != nil {
		t.Fatal(err)
	}
	opt, err := clientCertificates(filepath.Join(certDir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	var c tls.Config
	opt(&c)
	if c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
		t.Fatalf("client certificates are not required: %v", c.ClientAuth)
	}
}
