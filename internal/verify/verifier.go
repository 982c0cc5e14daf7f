// Package verify checks images in their registries against the verify rules of the policy
// engine: it resolves tags to digests and verifies cosign signatures (the legacy
// `sha256-<hex>.sig` tag and sigstore bundles stored as OCI referrers) with the libraries
// made for it (go-containerregistry, cosign, sigstore-go). Every result is cached and shared
// between concurrent requests, and every registry call is bounded by the request's deadline.
// The webhook and the CLI call it; the engine (internal/policy) stays free of I/O.
package verify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/cosign/v3/pkg/cosign"
	"github.com/sigstore/cosign/v3/pkg/oci"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	"github.com/sigstore/cosign/v3/pkg/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/utils/lru"

	"github.com/imagegate/imagegate/internal/attest"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/text"
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
}

// NamespaceInternalRegistriesFlag is the manager flag that sets
// Options.NamespaceInternalRegistries.
const NamespaceInternalRegistriesFlag = "namespace-internal-registries"

// Verifier checks verify rules against registries. It is safe for concurrent use.
type Verifier struct {
	transport http.RoundTripper
	keychain  authn.Keychain
	metrics   *Metrics
	results   *lru.Cache // string -> entry[*Outcome], passes
	failures  *lru.Cache // string -> entry[*Outcome], definitive failures
	tags      *lru.Cache // string -> entry[string], the digest a tag resolves to
	flight    flight
	limits    *limiter
	breaker   *breaker
	mu        sync.Mutex
	pullers   map[string]*remote.Puller
	now       func() time.Time
	timeout   time.Duration
	// tenantInternal is Options.NamespaceInternalRegistries.
	tenantInternal func(string) bool
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
		tenantInternal: o.NamespaceInternalRegistries,
	}
}

// Result is the outcome as the engine's Settle takes it.
func (o *Outcome) Result() policy.VerifyResult {
	return policy.VerifyResult{Reason: o.Reason, Findings: o.Findings}
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
func resultKey(ctx context.Context, pv *policy.Verification) string {
	key := pv.Rule.Key + "|" + pv.Repository + "@" + pv.Digest
	if pk := podKeychainOf(ctx); pk != nil {
		key += "|" + pk.id
	}
	return key
}

var noTrust = &Outcome{Reason: "its verify rule has no trust material loaded, so nothing can be verified"}

// lookup answers from the cache: the outcome and true on a hit. A rule without trust material
// is answered at once (it cannot verify anything).
func (v *Verifier) lookup(ctx context.Context, pv *policy.Verification) (*Outcome, bool) {
	if trust, ok := pv.Rule.Trust.(*Trust); !ok || trust == nil {
		return noTrust, true
	}
	key := resultKey(ctx, pv)
	o, hit := cached[*Outcome](v, v.results, key)
	if !hit {
		o, hit = cached[*Outcome](v, v.failures, key)
	}
	v.metrics.cache("signature", hit)
	return o, hit
}

// fetch verifies in the registry, once for all concurrent callers, and caches the outcome:
// a pass until verifiedTTL or until what it found expires (a scan's maxAge, an ignored
// finding's exception), whichever comes first; a definitive failure briefly, apart from the
// passes; a transient one (the registry or the network failed) not at all.
func (v *Verifier) fetch(ctx context.Context, pv *policy.Verification) *Outcome {
	trust := pv.Rule.Trust.(*Trust)
	key := resultKey(ctx, pv)
	o, err := lookupOnce(v, ctx, "outcome|"+key, pv.Repository, v.publicOnly(trust, pv.Repository), func(ctx context.Context) (*Outcome, bool) {
		o := v.check(ctx, trust, pv.Repository, pv.Digest)
		return o, o.transient
	})
	if err != nil {
		return &Outcome{Reason: err.Error(), transient: true}
	}
	if o.transient {
		return o
	}
	now := v.now()
	if o.Reason != "" {
		v.failures.Add(key, entry[*Outcome]{value: o, expires: now.Add(failureTTL)})
		return o
	}
	expires := now.Add(verifiedTTL)
	if !o.Expires.IsZero() && o.Expires.Before(expires) {
		expires = o.Expires
	}
	v.results.Add(key, entry[*Outcome]{value: o, expires: expires})
	return o
}

// deadlineReason is why a request got no answer: its own deadline came first.
func deadlineReason(ctx context.Context) string {
	return fmt.Sprintf("the registry did not answer before the request's deadline (%v); retry", context.Cause(ctx))
}

// lookupOnce runs work once for all concurrent callers with the same key, as a lookup of the
// registry of repo: on the verifier's own budget (LookupTimeout and lookupBytes), never a
// caller's deadline, in one of the slots of the process and of the namespace of the caller
// that started it, and not while the registry's circuit is open. work says whether what it
// found is a failure of the registry or the network (for the circuit breaker). A caller
// whose deadline has passed starts nothing, and each caller waits no longer than its own
// deadline. The error says why a caller got no value: its deadline, no slot, an open circuit;
// such a failure is never cached.
func lookupOnce[T any](v *Verifier, ctx context.Context, key, repo string, publicOnly bool, work func(context.Context) (T, bool)) (T, error) {
	var zero T
	host, _, _ := strings.Cut(repo, "/")
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return zero, errors.New(deadlineReason(ctx))
		}
		c, leader := v.flight.join(key)
		if leader {
			release, err := v.limits.acquire(ctx, namespaceOf(ctx))
			if err != nil {
				c.err, c.quota = err, true
				v.flight.finish(key, c)
				return zero, err
			}
			go func() {
				defer v.flight.finish(key, c)
				defer release()
				if c.err = v.breaker.allow(host); c.err != nil {
					return
				}
				lctx, cancel := context.WithTimeout(withBudget(withOrigin(context.WithoutCancel(ctx), host, publicOnly), lookupBytes), v.timeout)
				defer cancel()
				val, transient := work(lctx)
				v.breaker.record(host, transient)
				c.val = val
			}()
		}
		select {
		case <-c.done:
			if c.quota && attempt == 0 {
				continue // the lookup never ran for its leader's namespace: run one for this one
			}
			if c.err != nil {
				return zero, c.err
			}
			return c.val.(T), nil
		case <-ctx.Done():
			return zero, errors.New(deadlineReason(ctx))
		}
	}
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
		return resolved{digest: desc.Digest.String()}, false
	})
	if err == nil {
		err = r.err
	}
	if err != nil {
		return "", err
	}
	v.tags.Add(key, entry[string]{value: r.digest, expires: v.now().Add(tagTTL)})
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
		kc := v.keychain
		if trust.keychain != nil {
			kc = trust.keychain
		}
		if pk != nil {
			// The policy's pull secrets first, then the Pod's own, then the default.
			kcs := []authn.Keychain{pk.keychain, v.keychain}
			if trust.keychain != nil {
				kcs = append([]authn.Keychain{trust.keychain}, kcs...)
			}
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

// check verifies repo@digest against trust: a signature by any signer, in either format,
// then each attestation rule.
func (v *Verifier) check(ctx context.Context, trust *Trust, repo, digest string) *Outcome {
	fail := func(format string, args ...any) *Outcome { return &Outcome{Reason: fmt.Sprintf(format, args...)} }
	ref, err := name.NewDigest(repo+"@"+digest, name.StrictValidation)
	if err != nil {
		return fail("%q is not a reference the registry client takes: %v", repo+"@"+digest, err)
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return fail("its digest cannot be verified: %v", err)
	}
	ropts := v.remoteOptions(ctx, ref.Context().Registry, trust)
	oopts := []ociremote.Option{ociremote.WithRemoteOptions(ropts...)}
	registry := ref.RegistryStr()

	start := time.Now()
	legacy, legacyErr := legacySignatures(ref, oopts)
	v.metrics.registry("signatures", start)
	start = time.Now()
	referrers, referrersErr := listReferrers(ref, oopts)
	v.metrics.registry("referrers", start)
	var descs []v1.Descriptor
	bundleErr := referrersErr
	if referrersErr == nil {
		descs, bundleErr = bundleDescriptors(referrers, types.CosignSignPredicateType)
	}
	for _, err := range []error{legacyErr, bundleErr} {
		if errors.Is(err, errTooManyCandidates) {
			return fail("%s", text.Cut(err.Error(), maxReasonLength))
		}
	}
	if legacyErr != nil && bundleErr != nil {
		return &Outcome{Reason: registryError(registry, "listing signatures", legacyErr).Error(), transient: isTransient(legacyErr) || isTransient(bundleErr)}
	}

	if o := v.checkSignatures(ctx, trust, ref, h, ropts, oopts, legacy, descs, legacyErr, bundleErr, registry); o != nil {
		return o
	}
	if len(trust.attestations) == 0 {
		return &Outcome{}
	}
	return v.checkAttestations(ctx, trust, ref, h, ropts, oopts, referrers, referrersErr)
}

// checkSignatures looks for one signature by a trusted signer, one candidate at a time, and
// stops at the first that verifies (nil then); bundles are fetched only as they are tried.
func (v *Verifier) checkSignatures(ctx context.Context, trust *Trust, ref name.Digest, h v1.Hash, ropts []remote.Option, oopts []ociremote.Option,
	legacy []oci.Signature, descs []v1.Descriptor, legacyErr, bundleErr error, registry string) *Outcome {
	var problems []string
	for _, sig := range legacy {
		for i := range trust.signers {
			s := &trust.signers[i]
			co := checkOpts(trust, s, s.identities, oopts)
			co.ClaimVerifier = cosign.SimpleClaimVerifier
			if _, err := cosign.VerifyImageSignature(ctx, sig, h, co); err == nil {
				return nil
			} else {
				problems = append(problems, err.Error())
			}
		}
	}
	start := time.Now()
	verified := false
	unread, transient := eachBundle(ref, descs, ropts, func(b *sgbundle.Bundle) bool {
		for i := range trust.signers {
			s := &trust.signers[i]
			_, err := verifyBundle(ctx, trust, s, b, h, oopts, types.CosignSignPredicateType)
			if err == nil {
				verified = true
				return true
			}
			problems = append(problems, err.Error())
		}
		return false
	})
	if len(descs) > 0 {
		v.metrics.registry("bundles", start)
	}
	if verified {
		return nil
	}
	problems = append(problems, unread...)
	transient = transient || isTransient(legacyErr) || isTransient(bundleErr)
	found := len(legacy) + len(descs)
	var tried []string
	for i := range trust.signers {
		tried = append(tried, trust.signers[i].describe())
	}
	var b strings.Builder
	b.WriteString("no signature by a trusted signer (tried: ")
	b.WriteString(strings.Join(tried, ", "))
	switch {
	case found == 0 && legacyErr == nil && bundleErr == nil:
		b.WriteString("; found no signature: neither a sha256-<hex>.sig tag nor a sigstore bundle among the referrers)")
	case found == 0:
		err := legacyErr
		if err == nil {
			err = bundleErr
		}
		fmt.Fprintf(&b, "; found no signature, and %s)", registryError(registry, "listing signatures", err))
	default:
		fmt.Fprintf(&b, "; found %d %s, none verified: %s)", found, text.Plural(found, "signature", "signatures"), firstProblem(problems))
	}
	return &Outcome{Reason: text.Cut(b.String(), maxReasonLength), transient: transient}
}

// firstProblem is the most telling verification error: cosign's errors repeat across
// signers, so the first distinct one is said, with a count of the others.
func firstProblem(problems []string) string {
	if len(problems) == 0 {
		return "unknown"
	}
	slices.Sort(problems)
	problems = slices.Compact(problems)
	if len(problems) == 1 {
		return problems[0]
	}
	return fmt.Sprintf("%s (and %d other errors)", problems[0], len(problems)-1)
}

func checkOpts(trust *Trust, s *signer, ids []cosign.Identity, ropts []ociremote.Option) *cosign.CheckOpts {
	return &cosign.CheckOpts{
		RegistryClientOpts: ropts,
		TrustedMaterial:    trust.root,
		SigVerifier:        s.key,
		Identities:         ids,
		IgnoreTlog:         !trust.tlog,
		// Certificates must carry SCTs when the trusted root lists CT logs (public Sigstore
		// does); a root without CT logs is a private Fulcio without one.
		IgnoreSCT: len(trust.root.CTLogs()) == 0,
		// Never contact Rekor at admission: a log entry counts only as the signature carries it.
		Offline: true,
	}
}

// errTooManyCandidates refuses an image with more candidate signatures or attestations of
// one kind than imagegate verifies. Whoever can push to the repository can add candidates;
// choosing some of them by anything unsigned (an annotation's date, the registry's order)
// would let them choose which are verified, so none is.
var errTooManyCandidates = errors.New("more candidates than imagegate verifies")

func tooMany(what string, n int) error {
	return fmt.Errorf("the image has %d %s, more than the %d imagegate verifies; it is refused rather than verified on a part of them that its registry's order or unsigned annotations would choose (remove stale ones from the registry): %w",
		n, what, maxCandidates, errTooManyCandidates)
}

// legacySignatures reads the signatures of the sha256-<hex>.sig tag (none when it does not
// exist); more than maxCandidates is an error.
func legacySignatures(ref name.Digest, ropts []ociremote.Option) ([]oci.Signature, error) {
	st, err := ociremote.SignatureTag(ref, ropts...)
	if err != nil {
		return nil, err
	}
	sigs, err := ociremote.Signatures(st, ropts...)
	if err != nil {
		return nil, err
	}
	sl, err := sigs.Get()
	if err != nil {
		return nil, err
	}
	if len(sl) > maxCandidates {
		return nil, tooMany("signatures in its sha256-<hex>.sig tag", len(sl))
	}
	return sl, nil
}

// listReferrers lists the image's referrers (the Referrers API, or the sha256-<hex> tag where
// the registry lacks it); none when there are none.
func listReferrers(ref name.Digest, ropts []ociremote.Option) ([]v1.Descriptor, error) {
	idx, err := ociremote.Referrers(ref, "", ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, err
	}
	return idx.Manifests, nil
}

// bundleDescriptors picks the sigstore bundles among the referrers whose predicate type is
// predicateType (cosign annotates it; a bundle without the annotation is a candidate, and its
// statement is checked once verified), in the registry's order: nothing unsigned orders them,
// and more than maxCandidates is an error, not a cut.
func bundleDescriptors(referrers []v1.Descriptor, predicateType string) ([]v1.Descriptor, error) {
	var descs []v1.Descriptor
	for _, d := range referrers {
		// Registries report the manifest's artifactType or its config's media type; cosign
		// also annotates the predicate type, which tells signatures from attestations.
		pt, annotated := d.Annotations[ociremote.BundlePredicateType]
		if !annotated && !strings.HasPrefix(d.ArtifactType, "application/vnd.dev.sigstore.bundle") {
			continue
		}
		if annotated && pt != predicateType {
			continue
		}
		descs = append(descs, d)
	}
	if len(descs) > maxCandidates {
		return nil, tooMany(fmt.Sprintf("sigstore bundles of predicate type %s among its referrers", predicateType), len(descs))
	}
	return descs, nil
}

// errCompressed refuses a bundle layer whose bytes are compressed: its media type is JSON,
// and decompressing what a registry serves is how a few hundred kilobytes become gigabytes.
var errCompressed = errors.New("the bundle layer is compressed (gzip or zstd), but its media type is JSON: refused unread")

// readBundle reads the sigstore bundle one referrer holds: its manifest, then its one layer's
// bytes as stored (bounded by the transport, never decompressed).
func readBundle(ref name.Digest, d v1.Descriptor, ropts []remote.Option) (*sgbundle.Bundle, error) {
	img, err := remote.Image(ref.Context().Digest(d.Digest.String()), ropts...)
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("the bundle manifest has %d layers, not 1", len(layers))
	}
	mt, err := layers[0].MediaType()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(string(mt), "application/vnd.dev.sigstore.bundle") {
		return nil, fmt.Errorf("the bundle layer's media type is %q, not a sigstore bundle's", text.Cut(string(mt), 128))
	}
	rc, err := layers[0].Compressed() // the bytes as stored, checked against their digest
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	raw, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if compressed(raw) {
		return nil, errCompressed
	}
	pb := &protobundle.Bundle{}
	if err := protojson.Unmarshal(raw, pb); err != nil {
		return nil, fmt.Errorf("the bundle does not parse: %w", err)
	}
	b, err := sgbundle.NewBundle(pb)
	if err != nil {
		return nil, err
	}
	if !b.MinVersion("v0.3") {
		return nil, errors.New("the bundle's version is older than v0.3")
	}
	return b, nil
}

// eachBundle reads the bundles descs name, one at a time, and hands each to use until use
// returns true. It returns why the bundles it could not read were not, and whether any of
// those failures was the registry's or the network's.
func eachBundle(ref name.Digest, descs []v1.Descriptor, ropts []remote.Option, use func(*sgbundle.Bundle) bool) (unread []string, transient bool) {
	for _, d := range descs {
		b, err := readBundle(ref, d, ropts)
		if err != nil {
			transient = transient || isTransient(err)
			unread = append(unread, "a bundle could not be read: "+err.Error())
			continue
		}
		if use(b) {
			break
		}
	}
	return unread, transient
}

// compressed reports whether b starts with the magic of gzip or zstd.
func compressed(b []byte) bool {
	return bytes.HasPrefix(b, []byte{0x1f, 0x8b}) || bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd})
}

// verifyBundle checks one sigstore bundle: signed by s (for keyless, any one identity), over
// an in-toto statement whose subject is the digest and whose predicate type is predicateType.
// It returns the statement.
func verifyBundle(ctx context.Context, trust *Trust, s *signer, b *sgbundle.Bundle, h v1.Hash, ropts []ociremote.Option, predicateType string) (*statement, error) {
	want, err := hex.DecodeString(h.Hex)
	if err != nil {
		return nil, err
	}
	policyOpt := sgverify.WithArtifactDigest(h.Algorithm, want)
	attempts := [][]cosign.Identity{nil}
	if s.key == nil {
		attempts = attempts[:0]
		for _, id := range s.identities {
			attempts = append(attempts, []cosign.Identity{id})
		}
	}
	var errs []error
	for _, ids := range attempts {
		if _, err := cosign.VerifyNewBundle(ctx, checkOpts(trust, s, ids, ropts), policyOpt, b); err != nil {
			errs = append(errs, err)
			continue
		}
		return bundleStatement(b, predicateType)
	}
	return nil, errors.Join(errs...)
}

// statement is the part of an in-toto statement imagegate reads.
type statement struct {
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// bundleStatement accepts a verified bundle only when its DSSE statement has the predicate
// type wanted: a signed SBOM or scan of the same digest is not a signature of it, and a
// signature is not a scan.
func bundleStatement(b *sgbundle.Bundle, predicateType string) (*statement, error) {
	env, ok := b.Content.(*protobundle.Bundle_DsseEnvelope)
	if !ok || env.DsseEnvelope == nil {
		return nil, errors.New("the bundle holds no DSSE envelope, so it is not a cosign image signature or attestation")
	}
	var st statement
	if err := json.Unmarshal(env.DsseEnvelope.Payload, &st); err != nil {
		return nil, fmt.Errorf("the bundle's statement does not parse: %w", err)
	}
	if st.PredicateType != predicateType {
		return nil, fmt.Errorf("the bundle's predicate is %q, not %s", st.PredicateType, predicateType)
	}
	return &st, nil
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

// Close releases the verifier's idle registry connections.
func (v *Verifier) Close() {
	if c, ok := v.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
