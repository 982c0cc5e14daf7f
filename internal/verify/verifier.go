// Package verify checks images in their registries against the verify rules of the policy
// engine: it resolves tags to digests and verifies cosign signatures (the legacy
// `sha256-<hex>.sig` tag and sigstore bundles stored as OCI referrers) with the libraries
// made for it (go-containerregistry, cosign, sigstore-go). Every result is cached and shared
// between concurrent requests; every lookup runs on a budget of its own, and no caller waits
// past its deadline. Decide is the one decision pipeline that the webhooks, the audit and the
// CLI call; the engine (internal/policy) stays free of I/O.
//
// verifier.go is the API and the caches; bounds.go the limits on registry work (budgets,
// quotas, the circuit breaker, shared lookups); registry.go the transport and where it may
// connect; signatures.go and bundles.go reading and checking signatures; attestations.go
// attestations and scans; trust.go the trust material of a verify section.
package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/utils/lru"

	"github.com/imagegate/imagegate/internal/attest"
	"github.com/imagegate/imagegate/internal/policy"
)

// Bounds and lifetimes. A verified result stays true as long as the digest, the policy and
// its trust material stay the same, so it is kept longer; a failure may be a registry hiccup,
// so it is kept for seconds; a tag moves, so its digest is kept briefly.
const (
	verifiedTTL = 10 * time.Minute
	failureTTL  = 5 * time.Second
	tagTTL      = 30 * time.Second
	// maxCandidates bounds the signatures, and the bundles of each predicate type, that one
	// image may have: more refuses the image (see errTooManyCandidates), never a choice
	// among them by anything unsigned.
	maxCandidates   = 64
	maxReasonLength = 512
	// parallelism bounds the images of one request verified at once.
	parallelism = 8
)

// Options configure a Verifier.
type Options struct {
	// Transport carries every registry request; nil: one shared transport with bounded
	// response bodies (see NewTransport).
	Transport http.RoundTripper
	// Keychain gives the credentials for rules without pullSecrets; nil: anonymous.
	Keychain authn.Keychain
	// CacheEntries bounds each cache (verified results, tag resolutions). Default 10,000.
	CacheEntries int
	// Metrics records cache hits, misses and registry latency; nil: none.
	Metrics *Metrics
	// Now is the clock that scan ages and ignore expiries are judged by; nil: time.Now.
	Now func() time.Time
	// LookupTimeout bounds one registry lookup, whoever waits for it. Default 10 s.
	LookupTimeout time.Duration
	// NamespaceInternalRegistries, when set, says which registries (host or host:port, as
	// images name them) the verify rules of namespaces' ImagePolicies may reach on internal
	// addresses (loopback, private, shared); for any other, every connection of such a rule's
	// lookups must go to a public address, so a namespace cannot point imagegate at the
	// cluster's network. Cluster policies' rules are not limited. nil: no limit (the CLI,
	// which runs on its user's network).
	NamespaceInternalRegistries func(registry string) bool
	// Platforms lists the platforms ("linux/amd64") the cluster's nodes run, sorted, for
	// rules with indexTrust Platforms or Either; nil or empty: every platform an index lists.
	Platforms func() []string
}

// NamespaceInternalRegistriesFlag is the manager flag that sets
// Options.NamespaceInternalRegistries.
const NamespaceInternalRegistriesFlag = "namespace-internal-registries"

// Verifier checks verify rules against registries. It is safe for concurrent use.
type Verifier struct {
	transport http.RoundTripper
	keychain  authn.Keychain
	// clouds are the keychains of the manager's cloud identities that rules name, by list.
	clouds   map[string]authn.Keychain
	metrics  *Metrics
	results  *lru.Cache // string -> entry[*Outcome], passes
	failures *lru.Cache // string -> entry[*Outcome], definitive failures
	tags     *lru.Cache // string -> entry[string], the digest a tag resolves to
	flight   flight
	limits   *limiter
	breaker  *breaker
	mu       sync.Mutex
	pullers  map[string]*remote.Puller
	now      func() time.Time
	timeout  time.Duration
	// tenantInternal is Options.NamespaceInternalRegistries.
	tenantInternal func(string) bool
	// platforms is Options.Platforms.
	platforms func() []string
}

// entry is a cached value and the time it stops being one.
type entry[T any] struct {
	value   T
	expires time.Time
}

// Outcome is what one verification found.
type Outcome struct {
	// Reason is why the image failed ("" when verified).
	Reason string `json:"reason,omitempty"`
	// Expires is when a passing outcome must be checked again because of what it found: a
	// scan reaches its maxAge, or an ignored finding's exception ends. Zero: no such time.
	Expires time.Time `json:"expires,omitzero"`
	// ScanExpires is the earliest time a scan that passed reaches its maxAge. Zero: none.
	ScanExpires time.Time `json:"scanExpires,omitzero"`
	// Attestations says what each attestation rule found, in the rule's order (up to the
	// first that failed).
	Attestations []AttestationReport `json:"attestations,omitempty"`
	// Findings, when set, are the vulnerability IDs that failed the image, and the only
	// reason it failed (an exception may ignore them).
	Findings []string `json:"-"`
	// Notes are what an admission of the image should still say: the findings VEX ruled
	// out, with the statements that did.
	Notes []string `json:"notes,omitempty"`
	// transient says the failure is the registry's or the network's, not an answer about
	// the image: it is not cached, and it counts towards the registry's circuit breaker.
	transient bool
}

// AttestationReport is what one attestation rule found for an image.
type AttestationReport struct {
	// Rule and PredicateType are the rule's.
	Rule          string `json:"rule"`
	PredicateType string `json:"predicateType"`
	// Scan is the newest valid vulnerability scan (vulnerability predicates only), without
	// its findings; Verdict says which of them refuse and which are ignored.
	Scan    *attest.Scan   `json:"scan,omitempty"`
	Verdict attest.Verdict `json:"verdict,omitzero"`
	// Platform is the platform ("linux/arm64") of the manifest the attestation was found on,
	// for a rule that trusts an index by its platforms; empty: the image itself.
	Platform string `json:"platform,omitempty"`
	// Provenance is what the first accepted SLSA provenance says (provenance rules only).
	Provenance *attest.Provenance `json:"provenance,omitempty"`
}

// New returns a Verifier.
func New(o Options) *Verifier {
	if o.Transport == nil {
		o.Transport = NewTransport()
	}
	if o.Keychain == nil {
		o.Keychain = authn.NewMultiKeychain() // anonymous
	}
	if o.CacheEntries <= 0 {
		o.CacheEntries = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LookupTimeout <= 0 {
		o.LookupTimeout = lookupTimeout
	}
	return &Verifier{
		transport: o.Transport, keychain: o.Keychain, metrics: o.Metrics,
		results: lru.New(o.CacheEntries), failures: lru.New(failureEntries), tags: lru.New(o.CacheEntries),
		limits: newLimiter(maxLookups, namespaceLookups), breaker: newBreaker(o.Now),
		pullers: map[string]*remote.Puller{}, now: o.Now, timeout: o.LookupTimeout,
		tenantInternal: o.NamespaceInternalRegistries, platforms: o.Platforms,
	}
}

// Result is the outcome as the engine's Settle takes it.
func (o *Outcome) Result() policy.VerifyResult {
	r := policy.VerifyResult{Reason: o.Reason, Findings: o.Findings}
	if o.Reason == "" {
		r.Notes = o.Notes
	}
	return r
}

// Outcomes verifies each pending verification and returns, per item, what it found: why it
// failed ("" when verified), the attestations' findings, when a scan expires. Cached results
// are answered in place; only misses go to the registry, in parallel when there are several.
func (v *Verifier) Outcomes(ctx context.Context, pending []policy.Verification) []*Outcome {
	outcomes := make([]*Outcome, len(pending))
	var misses []int
	for i := range pending {
		if o, hit := v.lookup(ctx, &pending[i]); hit {
			outcomes[i] = o
		} else {
			misses = append(misses, i)
		}
	}
	if len(misses) > 0 {
		v.fetchAll(ctx, pending, misses, outcomes)
	}
	return outcomes
}

// fetchAll fetches the misses, in parallel when there are several.
func (v *Verifier) fetchAll(ctx context.Context, pending []policy.Verification, misses []int, outcomes []*Outcome) {
	if len(misses) == 1 {
		outcomes[misses[0]] = v.fetch(ctx, &pending[misses[0]])
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for _, i := range misses {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			outcomes[i] = v.fetch(ctx, &pending[i])
		}()
	}
	wg.Wait()
}

// resultKey is what a verification's result is cached under: the rule's key (policy,
// generation, trust material), the image's digest, and the Pod's own credentials when they
// were used (results obtained with them are that Pod's, its failures above all).
func (v *Verifier) resultKey(ctx context.Context, pv *policy.Verification) string {
	key := pv.Rule.Key + "|" + pv.Repository + "@" + pv.Digest
	if t, ok := pv.Rule.Trust.(*Trust); ok && t != nil && t.byPlatform() {
		key += "|" + strings.Join(v.nodePlatforms(), ",") // what is checked depends on the nodes
	}
	if pk := podKeychainOf(ctx); pk != nil {
		key += "|" + pk.id
	}
	return key
}

var noTrust = &Outcome{Reason: "its verify rule has no trust material loaded, so nothing can be verified"}

// lookup answers from the cache: the outcome and true on a hit. A rule without trust material
// is answered at once (it cannot verify anything).
func (v *Verifier) lookup(ctx context.Context, pv *policy.Verification) (*Outcome, bool) {
	o, hit := v.peek(ctx, pv)
	v.metrics.cache("signature", hit)
	return o, hit
}

// peek is lookup without counting in the cache metrics.
func (v *Verifier) peek(ctx context.Context, pv *policy.Verification) (*Outcome, bool) {
	if trust, ok := pv.Rule.Trust.(*Trust); !ok || trust == nil {
		return noTrust, true
	}
	key := v.resultKey(ctx, pv)
	o, hit := cached[*Outcome](v, v.results, key)
	if !hit {
		o, hit = cached[*Outcome](v, v.failures, key)
	}
	return o, hit
}

// fetch verifies in the registry, once for all concurrent callers, and caches the outcome:
// a pass until verifiedTTL or until what it found expires (a scan's maxAge, an ignored
// finding's exception), whichever comes first; a definitive failure briefly, apart from the
// passes; a transient one (the registry or the network failed) not at all.
func (v *Verifier) fetch(ctx context.Context, pv *policy.Verification) *Outcome {
	trust := pv.Rule.Trust.(*Trust)
	key := v.resultKey(ctx, pv)
	o, err := lookupOnce(v, ctx, "outcome|"+key, pv.Repository, v.publicOnly(trust, pv.Repository), func(ctx context.Context) (*Outcome, bool) {
		// The outcome is cached before the flight ends, and looked up when one starts: a
		// caller that missed the cache just before a flight ended finds it then, and never
		// runs the same lookup twice.
		if o, hit := v.peek(ctx, pv); hit {
			return o, false
		}
		o := v.check(ctx, trust, pv.Repository, pv.Digest)
		v.store(key, o)
		return o, o.transient
	})
	if err != nil {
		return &Outcome{Reason: err.Error(), transient: true}
	}
	return o
}

// store caches an outcome: a pass until verifiedTTL or until what it found expires, a
// definitive failure for failureTTL, a transient one not at all.
func (v *Verifier) store(key string, o *Outcome) {
	if o.transient {
		return
	}
	now := v.now()
	if o.Reason != "" {
		v.failures.Add(key, entry[*Outcome]{value: o, expires: now.Add(failureTTL)})
		return
	}
	expires := now.Add(verifiedTTL)
	if !o.Expires.IsZero() && o.Expires.Before(expires) {
		expires = o.Expires
	}
	v.results.Add(key, entry[*Outcome]{value: o, expires: expires})
}

// publicOnly says whether a lookup of repo for trust's rule may reach only public addresses:
// the rule is a namespace's and its registry is not one the manager lets namespaces reach on
// internal addresses.
func (v *Verifier) publicOnly(trust *Trust, repo string) bool {
	if v.tenantInternal == nil || !trust.namespaced {
		return false
	}
	host, _, _ := strings.Cut(repo, "/")
	return !v.tenantInternal(host)
}

// Resolve returns the digest that the tag of an unpinned image names now, with a HEAD request
// (which does not count against Docker Hub's pull limit), cached briefly.
func (v *Verifier) Resolve(ctx context.Context, u *policy.Unpinned) (string, error) {
	trust, _ := u.Rule.Trust.(*Trust)
	if trust == nil {
		trust = &Trust{}
	}
	key := trust.credentials + "|" + u.Repository + ":" + u.Tag
	if pk := podKeychainOf(ctx); pk != nil {
		key += "|" + pk.id
	}
	publicOnly := v.publicOnly(trust, u.Repository)
	if publicOnly {
		key += "|public" // what a cluster policy's rule resolved on an internal address is not the namespace's
	}
	if d, ok := cached[string](v, v.tags, key); ok {
		v.metrics.cache("tag", true)
		return d, nil
	}
	v.metrics.cache("tag", false)
	type resolved struct {
		digest string
		err    error
	}
	r, err := lookupOnce(v, ctx, "tag|"+key, u.Repository, publicOnly, func(ctx context.Context) (resolved, bool) {
		// Cached before the flight ends, looked up when one starts (as fetch does).
		if d, ok := cached[string](v, v.tags, key); ok {
			return resolved{digest: d}, false
		}
		tag, err := name.NewTag(u.Repository+":"+u.Tag, name.StrictValidation)
		if err != nil {
			return resolved{err: fmt.Errorf("%q is not a reference the registry client takes: %w", u.Repository+":"+u.Tag, err)}, false
		}
		start := time.Now()
		desc, err := remote.Head(tag, v.remoteOptions(ctx, tag.Context().Registry, trust)...)
		v.metrics.registry("resolve", start)
		if err != nil {
			return resolved{err: registryError(tag.RegistryStr(), "resolving the tag "+u.Tag, err)}, isTransient(err)
		}
		v.tags.Add(key, entry[string]{value: desc.Digest.String(), expires: v.now().Add(tagTTL)})
		return resolved{digest: desc.Digest.String()}, false
	})
	if err == nil {
		err = r.err
	}
	if err != nil {
		return "", err
	}
	return r.digest, nil
}

// cached returns the value under key until it expires (at its expiry instant it has).
func cached[T any](v *Verifier, c *lru.Cache, key string) (T, bool) {
	var zero T
	x, ok := c.Get(key)
	if !ok {
		return zero, false
	}
	e := x.(entry[T])
	if !v.now().Before(e.expires) {
		c.Remove(key)
		return zero, false
	}
	return e.value, true
}

// Close releases the verifier's idle registry connections.
func (v *Verifier) Close() {
	if c, ok := v.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Transient says the outcome is a failure of the registry or the network, not an answer
// about the image (reports call it an error, not a refusal).
func (o *Outcome) Transient() bool { return o.transient }

// NotVerifiedYet is the reason Known gives for a verification nothing has checked yet.
const NotVerifiedYet = "not verified yet: no admission or audit pass has checked this digest against this verify rule"

// Known is a Checker that answers from what this verifier has already found (the audit's
// passes and the admissions) and never calls a registry: anything not found is answered
// with NotVerifiedYet. The policy change preflight asks it.
func (v *Verifier) Known() Checker { return known{v} }

// NothingKnown is the Checker that knows nothing: every verification is NotVerifiedYet.
var NothingKnown Checker = known{}

type known struct{ v *Verifier } // nil: nothing is known

func (k known) Outcomes(ctx context.Context, pending []policy.Verification) []*Outcome {
	out := make([]*Outcome, len(pending))
	for i := range pending {
		if k.v != nil {
			if o, hit := k.v.peek(ctx, &pending[i]); hit {
				out[i] = o
				continue
			}
		}
		out[i] = &Outcome{Reason: NotVerifiedYet}
	}
	return out
}

func (k known) Resolve(context.Context, *policy.Unpinned) (string, error) {
	return "", errors.New(NotVerifiedYet)
}
