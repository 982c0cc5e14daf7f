package main

import (
	"crypto/tls"
	"flag"
	"path/filepath"
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
