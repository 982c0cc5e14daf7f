package verify

import (
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// NewWithLimits is New with other bounds on the lookups running at once (in the process, per
// namespace), so that tests reach them with few requests.
func NewWithLimits(o Options, all, perNamespace int) *Verifier {
	v := New(o)
	v.limits = newLimiter(all, perNamespace)
	return v
}

// Lookups is how many lookups of namespace hold a slot now.
func Lookups(v *Verifier, namespace string) int {
	v.limits.mu.Lock()
	defer v.limits.mu.Unlock()
	return len(v.limits.perNS[namespace])
}

// RemoteTick runs one refresh tick of r at now.
func RemoteTick(r *Remote, now time.Time) { r.tick(now) }

// RemoteFetching is how many items of r are being fetched now.
func RemoteFetching(r *Remote) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.entries {
		if e.fetching {
			n++
		}
	}
	return n
}

// SetRemoteClock makes r read the time from now.
func SetRemoteClock(r *Remote, now func() time.Time) { r.now = now }

// SelectPlatforms is selectPlatforms, as "platform digest" pairs.
func SelectPlatforms(m *v1.IndexManifest, nodes []string) ([][2]string, string) {
	ps, why := selectPlatforms(m, nodes)
	var out [][2]string
	for _, p := range ps {
		out = append(out, [2]string{p.platform, p.digest})
	}
	return out, why
}
