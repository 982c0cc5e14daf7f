// Package credentials gives imagegate the registry credentials a node would use: it runs the
// kubelet's image credential provider plugins (KEP-2133) from the same
// CredentialProviderConfig file and binaries, so any registry the nodes pull from with the
// cloud's identity (ECR, Artifact Registry, ACR, ...), imagegate reads with the manager's.
package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	kubeletconfig "k8s.io/kubelet/config/v1"
	providerapi "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

// Bounds on what a plugin and the configuration may make imagegate hold or wait for.
const (
	maxConfigBytes   = 1 << 20
	maxResponseBytes = 1 << 20
	maxStderrBytes   = 4 << 10
	maxCacheEntries  = 1024
	// execTimeout bounds one plugin run, besides the caller's own deadline.
	execTimeout = 30 * time.Second
)

// Providers is an authn.Keychain that asks the configured plugins for credentials.
type Providers struct {
	providers []*provider
	// Log receives a plugin's stderr when it fails (never put into refusal messages: a
	// plugin may print anything there). Nil: dropped.
	Log func(provider string, stderr string)
	// now is the clock (tests).
	now func() time.Time

	mu    sync.Mutex
	cache map[string]entry
	// locks serialize plugin runs per provider and registry (striped: a Pod's image names
	// any number of hosts).
	locks [64]chan struct{}
}

type provider struct {
	name       string
	binary     string
	apiVersion string
	args       []string
	env        []string
	match      []*url.URL
	defaultTTL time.Duration
}

type entry struct {
	auth    authn.AuthConfig
	expires time.Time
}

// Load reads a kubelet CredentialProviderConfig (kubelet.config.k8s.io/v1) and finds each
// provider's executable in binDir. Whatever the kubelet would refuse is refused, and what
// imagegate cannot do (service account tokens for a Pod) is refused, naming the provider.
func Load(configPath, binDir string) (*Providers, error) {
	f, err := os.Open(configPath) //nolint:gosec // G304: the operator's own flag names the file

	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", configPath, maxConfigBytes)
	}
	var cfg kubeletconfig.CredentialProviderConfig
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", configPath, err)
	}
	if cfg.APIVersion != kubeletconfig.SchemeGroupVersion.String() || cfg.Kind != "CredentialProviderConfig" {
		return nil, fmt.Errorf("%s: apiVersion %q kind %q: want %s CredentialProviderConfig", configPath, cfg.APIVersion, cfg.Kind, kubeletconfig.SchemeGroupVersion)
	}
	if len(cfg.Providers) == 0 {
		return nil, fmt.Errorf("%s lists no providers", configPath)
	}
	ps := &Providers{now: time.Now, cache: map[string]entry{}}
	for i := range ps.locks {
		ps.locks[i] = make(chan struct{}, 1)
	}
	seen := map[string]bool{}
	for i := range cfg.Providers {
		p, err := newProvider(&cfg.Providers[i], binDir)
		if err != nil {
			return nil, fmt.Errorf("%s: providers[%d] %q: %w", configPath, i, cfg.Providers[i].Name, err)
		}
		if seen[p.name] {
			return nil, fmt.Errorf("%s: providers[%d]: the name %q is used twice", configPath, i, p.name)
		}
		seen[p.name] = true
		ps.providers = append(ps.providers, p)
	}
	return ps, nil
}

func newProvider(c *kubeletconfig.CredentialProvider, binDir string) (*provider, error) {
	switch {
	case c.Name == "" || c.Name == "." || c.Name == ".." || strings.ContainsAny(c.Name, `/\`):
		return nil, errors.New("name must be the file name of the plugin in the bin directory")
	case len(c.MatchImages) == 0:
		return nil, errors.New("matchImages is required")
	case c.DefaultCacheDuration == nil:
		return nil, errors.New("defaultCacheDuration is required")
	case c.DefaultCacheDuration.Duration < 0:
		return nil, errors.New("defaultCacheDuration cannot be negative")
	case c.APIVersion != providerapi.SchemeGroupVersion.String():
		return nil, fmt.Errorf("apiVersion %q: imagegate speaks %s", c.APIVersion, providerapi.SchemeGroupVersion)
	case c.TokenAttributes != nil:
		return nil, errors.New("tokenAttributes (a service account token of the Pod being pulled) is not supported: imagegate reads images for policies, not for one Pod")
	}
	bin := filepath.Join(binDir, c.Name)
	st, err := os.Stat(bin)
	if err != nil {
		return nil, fmt.Errorf("the plugin: %w", err)
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("the plugin %s is not an executable file", bin)
	}
	p := &provider{name: c.Name, binary: bin, apiVersion: c.APIVersion, args: c.Args, defaultTTL: c.DefaultCacheDuration.Duration}
	for _, e := range c.Env {
		p.env = append(p.env, e.Name+"="+e.Value)
	}
	for _, m := range c.MatchImages {
		u, err := parseImageURL(m)
		if err != nil {
			return nil, fmt.Errorf("matchImages %q: %w", m, err)
		}
		if strings.ContainsAny(u.Port(), "*?[") || strings.ContainsAny(u.Path, "*?[") {
			return nil, fmt.Errorf("matchImages %q: globs are allowed in the host only", m)
		}
		if _, err := path.Match(u.Hostname(), ""); err != nil {
			return nil, fmt.Errorf("matchImages %q: %w", m, err)
		}
		p.match = append(p.match, u)
	}
	return p, nil
}

// parseImageURL reads host[:port][/path] as the kubelet does.
func parseImageURL(s string) (*url.URL, error) {
	if s == "" || strings.Contains(s, "://") {
		return nil, errors.New("want host[:port][/path]")
	}
	u, err := url.Parse("https://" + s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("want host[:port][/path]")
	}
	return u, nil
}

// matches reports whether image (host[:port]/path) matches the pattern as the kubelet's
// matchImages do: the same number of host labels, each matching its glob (one label per
// glob), the same port, and the pattern's path a prefix of the image's.
func matches(pattern, image *url.URL) bool {
	if pattern.Port() != image.Port() {
		return false
	}
	pl := strings.Split(strings.ToLower(pattern.Hostname()), ".")
	il := strings.Split(strings.ToLower(image.Hostname()), ".")
	if len(pl) != len(il) {
		return false
	}
	for i := range pl {
		if ok, _ := path.Match(pl[i], il[i]); !ok {
			return false
		}
	}
	return strings.HasPrefix(image.Path, pattern.Path)
}

// Resolve implements authn.Keychain: the first provider (in the file's order) with a
// matchImages entry for the repository answers, when the registry asks for credentials;
// none: anonymous.
func (ps *Providers) Resolve(r authn.Resource) (authn.Authenticator, error) {
	image, err := parseImageURL(r.String())
	if err != nil {
		return authn.Anonymous, nil //nolint:nilerr // not an image name: no provider can match it
	}
	for _, p := range ps.providers {
		for _, m := range p.match {
			if matches(m, image) {
				return &authenticator{ps: ps, p: p, image: r.String()}, nil
			}
		}
	}
	return authn.Anonymous, nil
}

// authenticator asks its provider each time the registry client needs credentials, so that
// a client kept for hours gets fresh ones when the cached ones expire.
type authenticator struct {
	ps    *Providers
	p     *provider
	image string
}

func (a *authenticator) Authorization() (*authn.AuthConfig, error) {
	return a.AuthorizationContext(context.Background())
}

func (a *authenticator) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	return a.ps.credentials(ctx, a.p, a.image)
}

// credentials answers from the cache (the image's entry, its registry's, the provider's
// global one), else runs the plugin once for all concurrent callers.
func (ps *Providers) credentials(ctx context.Context, p *provider, image string) (*authn.AuthConfig, error) {
	host, _, _ := strings.Cut(image, "/")
	keys := [3]string{
		p.name + "|image|" + image,
		p.name + "|registry|" + host,
		p.name + "|global",
	}
	if a, ok := ps.cached(keys[:]); ok {
		return a, nil
	}
	// One plugin run at a time per registry: concurrent callers wait for it and find its
	// credentials cached (a Registry or Global answer), or run their own (an Image one).
	// The wait is bounded by the caller's deadline, as the run is.
	lock := ps.locks[fnv32(p.name+"|"+host)%uint32(len(ps.locks))]
	select {
	case lock <- struct{}{}:
		defer func() { <-lock }()
	case <-ctx.Done():
		return nil, fmt.Errorf("image credential provider %q: waiting for another run for %s: %w", p.name, host, ctx.Err())
	}
	if a, ok := ps.cached(keys[:]); ok {
		return a, nil
	}
	resp, err := ps.run(ctx, p, image)
	if err != nil {
		return nil, err
	}
	auth, err := pick(resp, image)
	if err != nil {
		return nil, fmt.Errorf("image credential provider %q: %w", p.name, err)
	}
	ttl := p.defaultTTL
	if resp.CacheDuration != nil {
		ttl = resp.CacheDuration.Duration
	}
	if ttl > 0 {
		key := keys[0]
		switch resp.CacheKeyType {
		case providerapi.RegistryPluginCacheKeyType:
			key = keys[1]
		case providerapi.GlobalPluginCacheKeyType:
			key = keys[2]
		}
		ps.mu.Lock()
		if len(ps.cache) >= maxCacheEntries {
			clear(ps.cache) // bounded: providers and registries seldom reach this
		}
		ps.cache[key] = entry{auth: *auth, expires: ps.now().Add(ttl)}
		ps.mu.Unlock()
	}
	return auth, nil
}

func fnv32(s string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()
}

func (ps *Providers) cached(keys []string) (*authn.AuthConfig, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := ps.now()
	for _, k := range keys {
		if e, ok := ps.cache[k]; ok {
			if now.Before(e.expires) {
				a := e.auth
				return &a, true
			}
			delete(ps.cache, k)
		}
	}
	return nil, false
}

// run executes the plugin with the request on stdin, as the kubelet does, and reads its
// response, bounded in time and size.
func (ps *Providers) run(ctx context.Context, p *provider, image string) (*providerapi.CredentialProviderResponse, error) {
	req, err := json.Marshal(providerapi.CredentialProviderRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: p.apiVersion, Kind: "CredentialProviderRequest"},
		Image:    image,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.binary, p.args...) //nolint:gosec // G204: the operator's config names the plugin, found in the operator's bin directory

	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdin = bytes.NewReader(req)
	stdout := &limitedBuffer{max: maxResponseBytes}
	stderr := &limitedBuffer{max: maxStderrBytes}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	if err != nil || stdout.over {
		if ps.Log != nil && stderr.Len() > 0 {
			ps.Log(p.name, stderr.String())
		}
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("image credential provider %q did not answer in time: %w", p.name, ctx.Err())
		case err != nil:
			return nil, fmt.Errorf("image credential provider %q failed: %w (its stderr is in the manager's log)", p.name, err)
		default:
			return nil, fmt.Errorf("image credential provider %q wrote more than %d bytes", p.name, maxResponseBytes)
		}
	}
	var resp providerapi.CredentialProviderResponse
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("image credential provider %q: its response does not parse: %w", p.name, err)
	}
	if resp.APIVersion != p.apiVersion || resp.Kind != "CredentialProviderResponse" {
		return nil, fmt.Errorf("image credential provider %q answered apiVersion %q kind %q, not %s CredentialProviderResponse", p.name, resp.APIVersion, resp.Kind, p.apiVersion)
	}
	switch resp.CacheKeyType {
	case providerapi.ImagePluginCacheKeyType, providerapi.RegistryPluginCacheKeyType, providerapi.GlobalPluginCacheKeyType:
	default:
		return nil, fmt.Errorf("image credential provider %q answered cacheKeyType %q, not Image, Registry or Global", p.name, resp.CacheKeyType)
	}
	if resp.CacheDuration != nil && resp.CacheDuration.Duration < 0 {
		return nil, fmt.Errorf("image credential provider %q answered a negative cacheDuration", p.name)
	}
	return &resp, nil
}

// pick chooses the credentials of the response for image: of the auth keys that match it,
// the longest (the most specific), as the kubelet's keyring orders them.
func pick(resp *providerapi.CredentialProviderResponse, image string) (*authn.AuthConfig, error) {
	target, err := parseImageURL(image)
	if err != nil {
		return nil, err
	}
	best := ""
	found := false
	for k := range resp.Auth {
		u, err := parseImageURL(k)
		if err != nil || !matches(u, target) {
			continue
		}
		if !found || len(k) > len(best) || (len(k) == len(best) && k < best) {
			best, found = k, true
		}
	}
	if !found {
		return nil, fmt.Errorf("its response has no credentials for %s", image)
	}
	a := resp.Auth[best]
	return &authn.AuthConfig{Username: a.Username, Password: a.Password}, nil
}

// limitedBuffer keeps the first max bytes written and notes whether there were more.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
