package credentials

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/test/utils/credentialtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// plugin builds the test plugin into a bin directory, linked under the given names too.
func plugin(t *testing.T, names ...string) string {
	t.Helper()
	dir := credentialtest.Plugin(t)
	for _, n := range names {
		if err := os.Link(filepath.Join(dir, credentialtest.Name), filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func config(matchImages, env string) string {
	return `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: fake-provider
  matchImages: [` + matchImages + `]
  defaultCacheDuration: 10m
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  env:
` + env
}

func TestMatchImages(t *testing.T) {
	// The kubelet's documented semantics (kubelet.config.k8s.io/v1 matchImages).
	for _, c := range []struct {
		pattern, image string
		want           bool
	}{
		{"123456789.dkr.ecr.us-east-1.amazonaws.com", "123456789.dkr.ecr.us-east-1.amazonaws.com/app", true},
		{"*.dkr.ecr.*.amazonaws.com", "123456789.dkr.ecr.eu-west-3.amazonaws.com/team/app", true},
		{"*.azurecr.io", "acme.azurecr.io/app", true},
		{"*.azurecr.io", "acme.azurecr.io.evil.com/app", false},
		{"*.io", "acme.azurecr.io/app", false}, // one glob, one label
		{"gcr.io", "gcr.io/project/app", true},
		{"gcr.io", "us.gcr.io/project/app", false},
		{"app*.k8s.io", "apps.k8s.io/x", true},
		{"k8s.*", "k8s.io/x", true},
		{"registry.io:8080/path", "registry.io:8080/path/app", true},
		{"registry.io:8080/path", "registry.io/path/app", false},
		{"registry.io:8080/path", "registry.io:8080/other/app", false},
		{"registry.io", "registry.io:5000/app", false},
		{"Registry.IO", "registry.io/app", true},
	} {
		p, err := parseImageURL(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		i, err := parseImageURL(c.image)
		if err != nil {
			t.Fatal(err)
		}
		if got := matches(p, i); got != c.want {
			t.Errorf("%q matches %q: %v, want %v", c.pattern, c.image, got, c.want)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	bin := plugin(t)
	for _, c := range []struct{ config, want string }{
		{"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\nproviders: []\n", `want kubelet.config.k8s.io/v1 CredentialProviderConfig`},
		{"apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n", "lists no providers"},
		{strings.Replace(config("registry.io", ""), "name: fake-provider", "name: missing", 1), `providers[0] "missing": the plugin: stat`},
		{strings.Replace(config("registry.io", ""), "name: fake-provider", "name: ../fake-provider", 1), "name must be the file name of the plugin"},
		{strings.Replace(config("registry.io", ""), "credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1alpha1", 1), `imagegate speaks credentialprovider.kubelet.k8s.io/v1`},
		{strings.Replace(config("registry.io", ""), "  defaultCacheDuration: 10m\n", "", 1), "defaultCacheDuration is required"},
		{config("registry.io:80*", ""), `invalid port ":80*"`},
		{config("registry.io/team*", ""), "globs are allowed in the host only"},
		{config("https://registry.io", ""), "want host[:port][/path]"},
		{config("registry.io", "") + "  tokenAttributes: {serviceAccountTokenAudience: x, requireServiceAccount: true}\n", "tokenAttributes"},
		{config("registry.io", "") + "  unknownField: 1\n", `unknown field "unknownField"`},
		{config("registry.io", "") + "- name: fake-provider\n  matchImages: [a.io]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n", `the name "fake-provider" is used twice`},
	} {
		_, err := Load(writeConfig(t, c.config), bin)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want it to say %q\n%s", err, c.want, c.config)
		}
	}
}

// A registry that wants a password the plugin hands out: read through the keychain, with
// one plugin run per registry while the credentials last, and again once they expire.
func TestCredentialsFromThePlugin(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	reg.RequireBasicAuth("AWS", "t0ken")
	for _, repo := range []string{"acme/app", "acme/tool"} {
		if _, err := registrytest.PushTo(reg.Host, repo, "1", registrytest.Basic("AWS", "t0ken")); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(t.TempDir(), "runs")
	bin := plugin(t)
	env := "  - {name: PLUGIN_USER, value: AWS}\n  - {name: PLUGIN_PASSWORD, value: t0ken}\n  - {name: PLUGIN_LOG, value: " + log + "}\n"
	runs := func() []string {
		b, _ := os.ReadFile(log)
		return strings.Fields(string(b))
	}

	if _, err := Load(writeConfig(t, config(`"127.0.0.1:*"`, env)), bin); err == nil {
		t.Fatal("a glob in the port was accepted")
	}
	host, port, _ := strings.Cut(reg.Host, ":")
	ps, err := Load(writeConfig(t, config(`"`+host+`:`+port+`"`, env)), bin)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ps.now = func() time.Time { return now }
	read := func(repo string) error {
		ref, err := name.ParseReference(reg.Host + "/" + repo + ":1")
		if err != nil {
			return err
		}
		_, err = remote.Head(ref, remote.WithAuthFromKeychain(ps))
		return err
	}

	// Without the keychain the registry refuses.
	if ref, _ := name.ParseReference(reg.Host + "/acme/app:1"); ref == nil {
		t.Fatal("no reference")
	} else if _, err := remote.Head(ref); err == nil {
		t.Fatal("the registry let an anonymous client in")
	}
	// Eight concurrent reads of two repositories: one plugin run (Registry cache key).
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() { errs <- read([]string{"acme/app", "acme/tool"}[i%2]) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := runs(); len(got) != 1 {
		t.Errorf("plugin runs: %v, want 1", got)
	}
	// Expired: asked again.
	now = now.Add(11 * time.Minute)
	if err := read("acme/app"); err != nil {
		t.Fatal(err)
	}
	if got := runs(); len(got) != 2 || got[1] != reg.Host+"/acme/app" {
		t.Errorf("plugin runs after expiry: %v, want a second for %s/acme/app", got, reg.Host)
	}
	// An image no provider matches gets no credentials (and no plugin run).
	a, err := ps.Resolve(name.MustParseReference("ghcr.io/acme/app:1").Context())
	if err != nil || a != authn.Anonymous {
		t.Errorf("ghcr.io resolved to %v, %v", a, err)
	}
	if got := runs(); len(got) != 2 {
		t.Errorf("plugin runs: %v, want 2", got)
	}
}

func TestPluginFailures(t *testing.T) {
	bin := plugin(t)
	image := "registry.io/acme/app"
	for _, c := range []struct{ env, want string }{
		{"  - {name: PLUGIN_FAIL, value: 'AccessDenied: secret-looking detail'}\n", `image credential provider "fake-provider" failed: exit status 3 (its stderr is in the manager's log)`},
		{"  - {name: PLUGIN_RAW, value: 'not json'}\n", `its response does not parse`},
		{"  - {name: PLUGIN_RAW, value: '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1alpha1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\"}'}\n", `answered apiVersion "credentialprovider.kubelet.k8s.io/v1alpha1"`},
		{"  - {name: PLUGIN_RAW, value: '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Forever\"}'}\n", `cacheKeyType "Forever"`},
		{"  - {name: PLUGIN_AUTH_KEY, value: other.io}\n", `its response has no credentials for registry.io/acme/app`},
	} {
		ps, err := Load(writeConfig(t, config("registry.io", c.env)), bin)
		if err != nil {
			t.Fatal(err)
		}
		var logged []string
		ps.Log = func(p, stderr string) { logged = append(logged, p+": "+stderr) }
		_, err = ps.credentials(context.Background(), ps.providers[0], image)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want it to say %q", err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-looking") {
			t.Errorf("the plugin's stderr reached the message: %v", err)
		}
		if strings.Contains(c.env, "PLUGIN_FAIL") && (len(logged) != 1 || !strings.Contains(logged[0], "secret-looking detail")) {
			t.Errorf("stderr not logged: %v", logged)
		}
	}
}

// A caller waits for another run of the same registry no longer than its own deadline.
func TestWaitIsBoundedByTheDeadline(t *testing.T) {
	ps, err := Load(writeConfig(t, config("registry.io", "")), plugin(t))
	if err != nil {
		t.Fatal(err)
	}
	p := ps.providers[0]
	lock := ps.locks[fnv32(p.name+"|registry.io")%uint32(len(ps.locks))]
	lock <- struct{}{} // another run holds the registry
	defer func() { <-lock }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ps.credentials(ctx, p, "registry.io/acme/app"); err == nil || !strings.Contains(err.Error(), "waiting for another run for registry.io: context deadline exceeded") {
		t.Errorf("got %v", err)
	}
}

// BenchmarkCacheMemory measures the credential cache full (maxCacheEntries), each entry an
// ECR-sized token (an ECR password is about 2.5 KB of base64), and reports the heap it holds.
func BenchmarkCacheMemory(b *testing.B) {
	token := strings.Repeat("A", 2500)
	var held float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ps := &Providers{now: time.Now, cache: map[string]entry{}}
		for i := range maxCacheEntries {
			key := fmt.Sprintf("ecr-credential-provider/%012d.dkr.ecr.us-east-1.amazonaws.com", i)
			ps.cache[key] = entry{auth: authn.AuthConfig{Username: "AWS", Password: token + strconv.Itoa(i)}, expires: time.Now().Add(12 * time.Hour)}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = float64(after.HeapAlloc) - float64(before.HeapAlloc)
		runtime.KeepAlive(ps)
	}
	b.ReportMetric(held/1024, "KiB-full-cache")
	b.ReportMetric(held/maxCacheEntries, "B/entry")
}
