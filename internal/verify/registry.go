package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imagegate/imagegate/internal/credentials"
	"github.com/imagegate/imagegate/internal/text"
	corev1 "k8s.io/api/core/v1"
)

// maxResponseBody bounds every registry response imagegate reads: manifests, referrer lists
// and signature layers are kilobytes; a hostile registry must not make it read gigabytes.
const maxResponseBody = 4 << 20

// NewTransport is the one transport every registry request of a Verifier goes through: pooled
// connections per registry host, timeouts on dialing and TLS, response bodies bounded by
// maxResponseBody and by the lookup's byte budget, and every connection's destination checked
// when it is dialed (see destinations).
func NewTransport() http.RoundTripper {
	d := &destinations{lookup: net.DefaultResolver.LookupIPAddr, internal: isInternal, proxies: proxyHosts()}
	return &limitedTransport{dest: d, proxy: http.ProxyFromEnvironment, base: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

type limitedTransport struct {
	base http.RoundTripper
	// dest and proxy, when set: a request a proxy carries has its destination checked here,
	// since imagegate dials only the proxy.
	dest  *destinations
	proxy func(*http.Request) (*url.URL, error)
}

func (t *limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := checkRedirect(r); err != nil {
		return nil, err
	}
	if t.dest != nil {
		// A proxied request's destination is checked here, since imagegate dials only the
		// proxy; a public-only lookup's too, since it may reuse a connection dialed for
		// another lookup.
		proxied := false
		if t.proxy != nil {
			u, _ := t.proxy(r)
			proxied = u != nil
		}
		if proxied || originOf(r.Context()).publicOnly {
			if err := t.dest.allowed(r.Context(), r.URL.Hostname()); err != nil {
				return nil, err
			}
		}
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxResponseBody {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%s %s: the response is %d bytes, more than the %d imagegate reads: %w", r.Method, r.URL.Host, resp.ContentLength, maxResponseBody, errTooLarge)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxResponseBody, budget: budgetOf(r.Context())}
	return resp, nil
}

// errRefusedDestination is the error of a connection that the destination rules refuse.
var errRefusedDestination = errors.New("refused destination")

// originKey carries the registry host a lookup is for (the host the Pod's image names, which
// policies allowed) as an origin. Connections to other hosts (token realms, redirects to blob
// stores) are judged against it.
type originKey struct{}

// origin is the registry a lookup is for. publicOnly: the lookup is a namespace's verify rule
// for a registry the manager does not let namespaces reach on internal addresses, so no
// connection of it may reach one, the registry's own included.
type origin struct {
	host       string
	publicOnly bool
}

func withOrigin(ctx context.Context, host string, publicOnly bool) context.Context {
	return context.WithValue(ctx, originKey{}, origin{host: host, publicOnly: publicOnly})
}

func originOf(ctx context.Context) origin {
	o, _ := ctx.Value(originKey{}).(origin)
	return o
}

// destinations decides, when a connection is dialed, whether its address may be reached:
// link-local addresses (cloud metadata services such as 169.254.169.254) and unspecified ones
// never; loopback and private addresses only when the registry the lookup is for is itself on
// one (an in-cluster registry). The address checked is the address dialed (names are resolved
// once, here), so a name that resolves to a public address when checked and to an internal
// one when dialed (DNS rebinding) gets nowhere; and it holds for every connection: the
// registry, its token realm, its redirects, whatever a Pod, a registry or a forged review
// names. The proxies of the environment (HTTPS_PROXY), which an administrator set, are dialed
// as they are.
type destinations struct {
	lookup   func(context.Context, string) ([]net.IPAddr, error)
	internal func(net.IP) bool
	proxies  map[string]bool
}

func (d *destinations) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if d.proxies[addr] {
		return dialer.DialContext(ctx, network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	originInternal := d.originInternal(ctx, host)
	var refused error
	for _, ip := range ips {
		if refused = d.refuse(ctx, host, ip, originInternal); refused != nil {
			continue
		}
		conn, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		refused = err
	}
	if refused == nil {
		refused = fmt.Errorf("%s has no address", host)
	}
	return nil, refused
}

// allowed checks the destination of a request that a proxy carries: every address its host
// resolves to must be one imagegate may reach, since the proxy picks. (The proxy resolves the
// name again: rebinding is the proxy's to refuse.)
func (d *destinations) allowed(ctx context.Context, host string) error {
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return err
	}
	originInternal := d.originInternal(ctx, host)
	for _, ip := range ips {
		if err := d.refuse(ctx, host, ip, originInternal); err != nil {
			return err
		}
	}
	return nil
}

// refuse says why ip, an address of host, may not be reached (nil when it may).
func (d *destinations) refuse(ctx context.Context, host string, ip net.IP, originInternal func() bool) error {
	where := host + " resolves to " + ip.String() + ", "
	if net.ParseIP(host) != nil {
		where = host + " is " // an address, not a name
	}
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return fmt.Errorf("%sa link-local or unspecified address, which imagegate never connects to: %w", where, errRefusedDestination)
	}
	if !d.internal(ip) {
		return nil
	}
	if o := originOf(ctx); o.publicOnly {
		return fmt.Errorf("%san internal address, which a namespace's ImagePolicy may not make imagegate reach (the manager's --%s lists the registries it may): %w", where, NamespaceInternalRegistriesFlag, errRefusedDestination)
	}
	if !originInternal() {
		return fmt.Errorf("%san internal address, and the registry %s is not on one: %w", where, originOf(ctx).host, errRefusedDestination)
	}
	return nil
}

// originInternal reports, once and only when asked, whether the registry the lookup is for
// is on an internal address; a connection without one, or to the registry itself, counts as
// its own origin.
func (d *destinations) originInternal(ctx context.Context, host string) func() bool {
	return sync.OnceValue(func() bool {
		origin := originOf(ctx).host
		if h, _, err := net.SplitHostPort(origin); err == nil {
			origin = h
		}
		return origin == "" || strings.EqualFold(origin, host) || d.anyInternal(ctx, origin)
	})
}

func (d *destinations) resolve(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	addrs, err := d.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}

// anyInternal reports whether host is on an internal address.
func (d *destinations) anyInternal(ctx context.Context, host string) bool {
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if d.internal(ip) {
			return true
		}
	}
	return false
}

// isInternal reports whether ip is not a public address: loopback, private (RFC 1918, ULA),
// link-local, unspecified, or shared address space (RFC 6598, carrier-grade NAT).
func isInternal(ip net.IP) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || sharedSpace.Contains(ip)
}

var sharedSpace = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

// proxyHosts are the host:port of the proxies the environment names.
func proxyHosts() map[string]bool {
	out := map[string]bool{}
	for _, env := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		raw := os.Getenv(env)
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"https": "443", "socks5": "1080"}[u.Scheme]
			if port == "" {
				port = "80"
			}
		}
		out[net.JoinHostPort(u.Hostname(), port)] = true
	}
	return out
}

// checkRedirect refuses the redirects a hostile registry could use against the cluster:
// from HTTPS to plain HTTP; to link-local addresses (cloud metadata services such as
// 169.254.169.254), always; and from a registry on a public address to a host on an internal
// one (loopback, private, link-local), which would make imagegate reach into the cluster's
// network for whoever runs that registry. Registries redirect blob downloads to other hosts
// (CDNs, object stores), so other redirects are followed, at most 10 times (Go's limit); an
// in-cluster registry may redirect to an in-cluster store.
func checkRedirect(r *http.Request) error {
	return checkRedirectWith(r, net.DefaultResolver.LookupIPAddr)
}

func checkRedirectWith(r *http.Request, lookup func(context.Context, string) ([]net.IPAddr, error)) error {
	if r.Response == nil || r.Response.Request == nil {
		return nil // not a redirect
	}
	from := r.Response.Request.URL
	if from.Scheme == "https" && r.URL.Scheme != "https" {
		return fmt.Errorf("%s redirected to %s: a redirect from HTTPS to %s is refused", from.Host, r.URL.Redacted(), r.URL.Scheme)
	}
	origin := r
	for origin.Response != nil && origin.Response.Request != nil {
		origin = origin.Response.Request
	}
	if r.URL.Hostname() == origin.URL.Hostname() {
		return nil
	}
	target := addresses(r.Context(), r.URL.Hostname(), lookup)
	for _, ip := range target {
		if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() {
			return fmt.Errorf("%s redirected to %s: a redirect to a link-local address is refused", from.Host, r.URL.Redacted())
		}
	}
	if internal(target) && !internal(addresses(r.Context(), origin.URL.Hostname(), lookup)) {
		return fmt.Errorf("%s redirected to %s: a redirect from a public registry to an internal address is refused", from.Host, r.URL.Redacted())
	}
	return nil
}

// addresses are the IP addresses of host: itself when it is one, else what DNS says (none
// when it says nothing, which then counts as neither internal nor link-local: the dial fails).
func addresses(ctx context.Context, host string, lookup func(context.Context, string) ([]net.IPAddr, error)) []net.IP {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips
}

// internal reports whether any of ips is not a public address.
func internal(ips []net.IP) bool {
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
			return true
		}
	}
	return false
}

// errTooLarge ends a response body longer than maxResponseBody.
var errTooLarge = fmt.Errorf("the response is longer than the %d bytes imagegate reads", maxResponseBody)

type limitedBody struct {
	io.ReadCloser
	left   int64
	budget *budget
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if berr := b.budget.charge(n); berr != nil {
		return 0, berr
	}
	return n, err
}

// dockerConfig is the part of a kubernetes.io/dockerconfigjson Secret that holds credentials.
type dockerConfig struct {
	Auths map[string]struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	} `json:"auths"`
}

// secretKeychain gives the credentials of pull secrets, by registry host.
type secretKeychain map[string]authn.AuthConfig

// keychainFrom reads the credentials of kubernetes.io/dockerconfigjson Secrets; the first
// Secret that names a registry wins, as the kubelet does.
func keychainFrom(secrets []*corev1.Secret) (authn.Keychain, error) {
	kc := secretKeychain{}
	for _, s := range secrets {
		var cfg dockerConfig
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return nil, fmt.Errorf("Secret %q: %s does not parse: %w", s.Name, corev1.DockerConfigJsonKey, err)
		}
		for server, a := range cfg.Auths {
			host := registryHost(server)
			if _, seen := kc[host]; seen || host == "" {
				continue
			}
			ac := authn.AuthConfig{Username: a.Username, Password: a.Password}
			if a.Auth != "" && ac.Username == "" {
				raw, err := base64.StdEncoding.DecodeString(a.Auth)
				if err != nil {
					return nil, fmt.Errorf("Secret %q: the auth of %q is not base64", s.Name, server)
				}
				user, pass, ok := strings.Cut(string(raw), ":")
				if !ok {
					return nil, fmt.Errorf("Secret %q: the auth of %q is not user:password", s.Name, server)
				}
				ac.Username, ac.Password = user, pass
			}
			kc[host] = ac
		}
	}
	if len(kc) == 0 {
		return nil, errors.New("the Secrets hold no registry credentials")
	}
	return kc, nil
}

// registryHost is the host of a docker config key, which may be a URL
// (https://index.docker.io/v1/) or a host with a path.
func registryHost(server string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	if s == "docker.io" || s == "registry-1.docker.io" {
		s = name.DefaultRegistry
	}
	return s
}

// Resolve implements authn.Keychain.
func (kc secretKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if ac, ok := kc[r.RegistryStr()]; ok {
		return authn.FromConfig(ac), nil
	}
	return authn.Anonymous, nil
}

// CloseIdleConnections closes the pooled connections that are idle.
func (t *limitedTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// remoteOptions reuses one registry client (its connections and token) per registry and
// credentials, bounded by ctx.
func (v *Verifier) remoteOptions(ctx context.Context, reg name.Registry, trust *Trust) []remote.Option {
	key := reg.RegistryStr() + "|" + trust.credentials
	pk := podKeychainOf(ctx)
	if pk != nil {
		key += "|" + pk.id
	}
	v.mu.Lock()
	p := v.pullers[key]
	if p == nil {
		// The policy's pull secrets first, then its cloud identities, then the Pod's own, then
		// the manager's default, which pull secrets replace unless the Pod's own are read too.
		var kcs []authn.Keychain
		if trust.keychain != nil {
			kcs = append(kcs, trust.keychain)
		}
		if len(trust.cloud) > 0 {
			kcs = append(kcs, v.cloudKeychain(trust.cloud))
		}
		if pk != nil {
			kcs = append(kcs, pk.keychain)
		}
		if trust.keychain == nil || pk != nil {
			kcs = append(kcs, v.keychain)
		}
		kc := kcs[0]
		if len(kcs) > 1 {
			kc = authn.NewMultiKeychain(kcs...)
		}
		var err error
		p, err = remote.NewPuller(remote.WithTransport(v.transport), remote.WithAuthFromKeychain(kc),
			remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 2}),
			remote.WithUserAgent("imagegate"))
		if err == nil {
			if len(v.pullers) >= 1024 {
				clear(v.pullers) // bounded: registries and credentials seldom reach this
			}
			v.pullers[key] = p
		}
	}
	v.mu.Unlock()
	opts := []remote.Option{remote.WithContext(ctx)}
	if p != nil {
		opts = append(opts, remote.Reuse(p))
	}
	return opts
}

// registryError says which registry failed, doing what, and how. An answer that is not a
// registry's error document is said by its status only: its body could be anything that the
// host named by a Pod's image (or a redirect) serves, and refusal messages reach whoever
// created the Pod.
func registryError(registry, operation string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && len(te.Errors) == 0 {
		return fmt.Errorf("the registry %s failed while %s: unexpected status %d %s", registry, operation, te.StatusCode, http.StatusText(te.StatusCode))
	}
	return fmt.Errorf("the registry %s failed while %s: %s", registry, operation, text.Cut(err.Error(), maxReasonLength))
}

// cloudKeychain is the keychain of the manager's identities in the named clouds, one per
// list, so that its tokens are shared by every rule that names the same clouds. v.mu is held.
func (v *Verifier) cloudKeychain(clouds []string) authn.Keychain {
	key := strings.Join(clouds, ",")
	if kc, ok := v.clouds[key]; ok {
		return kc
	}
	kc, err := credentials.NewCloud(clouds)
	if err != nil {
		// The API's enum allows only known clouds; a keychain that refuses names the problem.
		return refusingKeychain{err}
	}
	if v.clouds == nil {
		v.clouds = map[string]authn.Keychain{}
	}
	v.clouds[key] = kc
	return kc
}

type refusingKeychain struct{ err error }

func (r refusingKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return nil, r.err }
