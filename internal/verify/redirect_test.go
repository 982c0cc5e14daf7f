package verify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// What a redirect may reach: the class is "a hostile registry makes imagegate reach into the
// cluster's network", whatever spelling the target has (an IP literal or a name that resolves
// to an internal address).
func TestCheckRedirect(t *testing.T) {
	dns := map[string][]string{
		"registry.example.com": {"203.0.113.10"},
		"cdn.example.net":      {"198.51.100.7"},
		"internal.example.com": {"10.0.0.5"},
		"registry.corp":        {"10.1.2.3"},
		"blobs.corp":           {"10.1.2.4"},
	}
	lookup := func(_ context.Context, host string) ([]net.IPAddr, error) {
		var out []net.IPAddr
		for _, a := range dns[host] {
			out = append(out, net.IPAddr{IP: net.ParseIP(a)})
		}
		return out, nil
	}
	hop := func(from, to string) *http.Request {
		first := httptest.NewRequest(http.MethodGet, from, nil)
		next := httptest.NewRequest(http.MethodGet, to, nil)
		next.Response = &http.Response{Request: first}
		return next
	}
	for _, c := range []struct {
		from, to, want string // want: "" followed, else a part of the refusal
	}{
		{"https://registry.example.com/v2/a/blobs/x", "https://cdn.example.net/x", ""},
		{"https://registry.example.com/v2/a/blobs/x", "https://registry.example.com/other", ""},
		{"https://registry.example.com/v2/a/blobs/x", "http://cdn.example.net/x", "from HTTPS to http"},
		{"https://registry.example.com/v2/a/blobs/x", "https://10.0.0.5/x", "to an internal address"},
		{"https://registry.example.com/v2/a/blobs/x", "https://internal.example.com/x", "to an internal address"},
		{"https://registry.example.com/v2/a/blobs/x", "https://127.0.0.1:10250/pods", "to an internal address"},
		{"https://registry.example.com/v2/a/blobs/x", "https://[fd00::1]/x", "to an internal address"},
		{"https://registry.example.com/v2/a/blobs/x", "http://169.254.169.254/latest/", "from HTTPS to http"},
		{"http://registry.corp/v2/a/blobs/x", "http://169.254.169.254/latest/", "link-local"},
		{"http://registry.corp/v2/a/blobs/x", "http://blobs.corp/x", ""},
	} {
		err := checkRedirectWith(hop(c.from, c.to), lookup)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s -> %s refused: %v", c.from, c.to, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s -> %s: %v, want a refusal saying %q", c.from, c.to, err, c.want)
		}
	}
}
