package verify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/policy"
)

// listenOn starts an HTTP server (HTTPS when tls) on addr (a loopback address of its own).
func listenOn(t *testing.T, addr string, tls bool, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	s := &httptest.Server{Listener: l, Config: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	if c, ok := h.(connCounter); ok {
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				c.n.Add(1)
			}
		}
	}
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s, l.Addr().String()
}

// connCounter counts the connections its server accepts: a connection, not a request, is
// what must never reach an internal host.
type connCounter struct {
	http.Handler
	n *atomic.Int64
}

// The destination of every connection is checked when it is dialed, against the registry the
// lookup is for: a registry on a public address cannot make imagegate fetch a token realm, or
// follow a redirect, to an internal address, whether the realm names it by IP or by a name
// that resolves to it (DNS rebinding: the name is resolved once, where it is dialed); link-
// local addresses are never dialed; an internal registry reaches internal hosts.
// 127.0.0.1 plays a public address here and 127.0.0.2 an internal one.
func TestDestinationsAreCheckedWhenDialed(t *testing.T) {
	var internalHits atomic.Int64
	_, internalAddr := listenOn(t, "127.0.0.2:0", true, connCounter{n: &internalHits, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"token":"secret-of-the-cluster"}`))
	})})
	_, internalPort, _ := net.SplitHostPort(internalAddr)
	var realm atomic.Pointer[string]
	public, publicAddr := listenOn(t, "127.0.0.1:0", true, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+*realm.Load()+`",service="registry"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	_, publicPort, _ := net.SplitHostPort(publicAddr)
	dns := map[string]string{"registry.example.com": "127.0.0.1", "rebind.example.com": "127.0.0.2", "metadata.example.com": "169.254.169.254", "registry.internal.example.com": "127.0.0.2"}
	d := &destinations{
		lookup: func(_ context.Context, host string) ([]net.IPAddr, error) {
			if a, ok := dns[host]; ok {
				return []net.IPAddr{{IP: net.ParseIP(a)}}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
		internal: func(ip net.IP) bool { return ip.Equal(net.ParseIP("127.0.0.2")) || ip.IsLinkLocalUnicast() },
	}
	// The public registry serves HTTPS (as a registry named by a host name is reached).
	tlsConfig := public.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsConfig.InsecureSkipVerify = true //nolint:gosec // test servers' certificates name example.com
	v := New(Options{Transport: &limitedTransport{base: &http.Transport{DialContext: d.dial, TLSClientConfig: tlsConfig}}})
	defer v.Close()
	resolve := func(registry string) error {
		u := &policy.Unpinned{Repository: registry + "/acme/app", Tag: "1", Rule: &policy.VerifyRule{}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := v.Resolve(ctx, u)
		return err
	}
	for _, c := range []struct{ name, registry, realm, want string }{
		// go-containerregistry itself refuses a realm that is a private IP literal for an
		// HTTPS registry, before any dial; names are what the dial check is for.
		{"realm at an internal IP", "registry.example.com:" + publicPort, "https://127.0.0.2:" + internalPort + "/token", `realm host "127.0.0.2" is a private or link-local address`},
		{"realm at a name of an internal address", "registry.example.com:" + publicPort, "https://rebind.example.com:" + internalPort + "/token", "rebind.example.com resolves to 127.0.0.2, an internal address"},
		{"realm at a link-local address", "registry.example.com:" + publicPort, "https://metadata.example.com/latest", "a link-local or unspecified address, which imagegate never connects to"},
	} {
		t.Run(c.name, func(t *testing.T) {
			realm.Store(&c.realm)
			err := resolve(c.registry)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
			if n := internalHits.Load(); n != 0 {
				t.Errorf("the internal host was reached %d times", n)
			}
		})
	}
	// A registry on an internal address is the cluster's own: its realm may be internal too.
	t.Run("internal registry", func(t *testing.T) {
		r := "https://rebind.example.com:" + internalPort + "/token"
		realm.Store(&r)
		_, internalRegistry := listenOn(t, "127.0.0.2:0", true, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+r+`",service="registry"`)
			w.WriteHeader(http.StatusUnauthorized)
		}))
		_, port, _ := net.SplitHostPort(internalRegistry)
		err := resolve("registry.internal.example.com:" + port)
		if internalHits.Load() == 0 {
			t.Errorf("an internal registry's internal token realm was not reached: %v", err)
		}
	})
}

// recorder is a RoundTripper that records the hosts it is asked for and answers 200.
type recorder struct{ hosts []string }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.hosts = append(r.hosts, req.URL.Host)
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// Behind a proxy (HTTPS_PROXY), imagegate dials only the proxy, so the destination of each
// request is checked before it is handed to the proxy, by the same rules.
func TestProxiedRequestsAreChecked(t *testing.T) {
	dns := map[string]string{"registry.example.com": "203.0.113.10", "rebind.example.com": "10.0.0.7", "metadata.example.com": "169.254.169.254"}
	d := &destinations{
		lookup: func(_ context.Context, host string) ([]net.IPAddr, error) {
			return []net.IPAddr{{IP: net.ParseIP(dns[host])}}, nil
		},
		internal: isInternal,
	}
	base := &recorder{}
	proxy := func(*http.Request) (*url.URL, error) { return url.Parse("http://proxy.example.com:3128") }
	tr := &limitedTransport{base: base, dest: d, proxy: proxy}
	ctx := withOrigin(context.Background(), "registry.example.com", false)
	for _, c := range []struct{ url, want string }{
		{"https://registry.example.com/v2/", ""},
		{"https://rebind.example.com/token", "rebind.example.com resolves to 10.0.0.7, an internal address"},
		{"https://metadata.example.com/latest", "a link-local or unspecified address"},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			_ = resp.Body.Close()
		}
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: got %v, want %q", c.url, err, c.want)
		}
	}
	if strings.Join(base.hosts, ",") != "registry.example.com" {
		t.Errorf("handed to the proxy: %v, want only the registry", base.hosts)
	}
}

// A namespace's ImagePolicy names the registries its verify rules read, and a Pod in that
// namespace names the image: neither may point imagegate at the cluster's network. Such a
// rule's lookups reach only public addresses, the registry's own included, unless the manager
// lists the registry; a cluster policy's rules are not limited; and a connection that a
// cluster policy's lookup left open to an internal registry is not reused for a namespace's.
// 127.0.0.2 plays an internal address here.
func TestNamespacePoliciesReachOnlyPublicAddresses(t *testing.T) {
	var requests atomic.Int64
	srv, addr := listenOn(t, "127.0.0.2:0", true, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	_, port, _ := net.SplitHostPort(addr)
	registry := "registry.internal.example.com:" + port
	d := &destinations{
		lookup: func(_ context.Context, host string) ([]net.IPAddr, error) {
			if host == "registry.internal.example.com" {
				return []net.IPAddr{{IP: net.ParseIP("127.0.0.2")}}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
		internal: func(ip net.IP) bool { return ip.Equal(net.ParseIP("127.0.0.2")) },
	}
	tlsConfig := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsConfig.InsecureSkipVerify = true //nolint:gosec // the test server's certificate names example.com
	allowed := map[string]bool{}
	v := New(Options{
		Transport:                   &limitedTransport{dest: d, base: &http.Transport{DialContext: d.dial, TLSClientConfig: tlsConfig}},
		NamespaceInternalRegistries: func(r string) bool { return allowed[r] },
	})
	defer v.Close()
	resolve := func(namespaced bool, tag string) error {
		u := &policy.Unpinned{Repository: registry + "/acme/app", Tag: tag, Rule: &policy.VerifyRule{Trust: &Trust{namespaced: namespaced}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := v.Resolve(ctx, u)
		return err
	}
	const refused = "which a namespace's ImagePolicy may not make imagegate reach (the manager's --namespace-internal-registries lists the registries it may)"

	if err := resolve(false, "1"); requests.Load() == 0 {
		t.Fatalf("a cluster policy's rule did not reach its internal registry: %v", err)
	}
	before := requests.Load()
	if err := resolve(true, "2"); err == nil || !strings.Contains(err.Error(), refused) {
		t.Errorf("a namespace's rule for an internal registry: got %v, want %q", err, refused)
	}
	if n := requests.Load() - before; n != 0 {
		t.Errorf("a namespace's rule reached the internal registry with %d requests (over the cluster rule's open connection?)", n)
	}
	allowed[registry] = true
	if err := resolve(true, "3"); requests.Load() == before {
		t.Errorf("a namespace's rule for a registry the manager lists did not reach it: %v", err)
	}
}
