package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/test/utils/localcluster"
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

// A review's namespace and Secret names are the caller's word: the manager refuses to use
// Pods' pull secrets unless only the apiserver can call it.
func TestPullSecretsFromPodsNeedClientAuth(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr bool
	}{
		{nil, false},
		{[]string{"--pull-secrets-from-pods"}, true},
		{[]string{"--pull-secrets-from-pods", "--webhook-client-ca=/etc/ca.crt"}, false},
		{[]string{"--webhook-client-ca=/etc/ca.crt"}, false},
	} {
		fs := flag.NewFlagSet("manager", flag.ContinueOnError)
		o := bindFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := o.validate()
		if (err != nil) != tc.wantErr {
			t.Errorf("%v: validate() = %v, want an error: %v", tc.args, err, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "--webhook-client-ca") {
			t.Errorf("%v: the error does not name the missing flag: %v", tc.args, err)
		}
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

// A rotated client CA takes effect at the next handshake, without a restart; a file rewritten
// with garbage keeps the last good CA in force.
func TestClientCAReload(t *testing.T) {
	caA, err := localcluster.NewCA("apiserver-client-ca-a")
	if err != nil {
		t.Fatal(err)
	}
	caB, err := localcluster.NewCA("apiserver-client-ca-b")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "client-ca.pem")
	write := func(data []byte, at time.Time) {
		t.Helper()
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, at, at); err != nil {
			t.Fatal(err)
		}
	}
	write(caA.CertPEM, time.Now().Add(-time.Hour))
	opt, err := clientCertificates(file)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := caA.Serving("imagegate", []string{"localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	servingPair, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{Certificates: []tls.Certificate{servingPair}, MinVersion: tls.VersionTLS12}
	opt(server)
	handshake := func(ca *localcluster.CA) error {
		kp, err := ca.Client("kube-apiserver")
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(caA.Cert)
		c, s := net.Pipe()
		defer func() { _ = c.Close(); _ = s.Close() }()
		errs := make(chan error, 1)
		go func() { errs <- tls.Server(s, server).Handshake() }()
		client := tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
		_ = client.Handshake()
		_ = c.Close()
		return <-errs
	}
	if err := handshake(caA); err != nil {
		t.Fatalf("a client of the configured CA was refused: %v", err)
	}
	if err := handshake(caB); err == nil {
		t.Fatal("a client of another CA was accepted")
	}
	write(caB.CertPEM, time.Now())
	if err := handshake(caB); err != nil {
		t.Fatalf("after the CA file was rotated, a client of the new CA was refused: %v", err)
	}
	if err := handshake(caA); err == nil {
		t.Fatal("after the CA file was rotated, a client of the old CA was still accepted")
	}
	write([]byte("half-written"), time.Now().Add(time.Minute))
	if err := handshake(caB); err != nil {
		t.Fatalf("a garbage CA file replaced the last good CA: %v", err)
	}
	if err := handshake(caA); err == nil {
		t.Fatal("a garbage CA file opened the port")
	}
}

func TestCredentialProviderFlagsGoTogether(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr bool
	}{
		{[]string{"--image-credential-provider-config=/etc/cp.yaml"}, true},
		{[]string{"--image-credential-provider-bin-dir=/usr/libexec/cp"}, true},
		{[]string{"--image-credential-provider-config=/etc/cp.yaml", "--image-credential-provider-bin-dir=/usr/libexec/cp"}, false},
	} {
		fs := flag.NewFlagSet("manager", flag.ContinueOnError)
		o := bindFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := o.validate(); (err != nil) != tc.wantErr || (err != nil && !strings.Contains(err.Error(), "go together")) {
			t.Errorf("%v: validate() = %v, want an error: %v", tc.args, err, tc.wantErr)
		}
	}
}

func TestCloudRegistryCredentialsFlag(t *testing.T) {
	for args, want := range map[string]string{
		"--cloud-registry-credentials=ecr,google,acr": "",
		"--cloud-registry-credentials=ecr, acr":       "",
		"--cloud-registry-credentials=ecr,quay":       `--cloud-registry-credentials: unknown cloud registry provider "quay" (ecr, google, acr)`,
	} {
		fs := flag.NewFlagSet("manager", flag.ContinueOnError)
		o := bindFlags(fs)
		if err := fs.Parse([]string{args}); err != nil {
			t.Fatal(err)
		}
		err := o.validate()
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: validate() = %v, want %q", args, err, want)
		}
	}
}
