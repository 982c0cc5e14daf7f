// Package verify checks images in their registries against the verify rules of the policy
// engine: it resolves tags to digests and verifies cosign signatures (the legacy
// `sha256-<hex>.sig` tag and sigstore bundles stored as OCI referrers) with the libraries
// made for it (go-containerregistry, cosign, sigstore-go). Every result is cached and shared
// between concurrent requests, and every registry call is bounded by the request's deadline.
// The webhook and the CLI call it; the engine (internal/policy) stays free of I/O.
package verify

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	"golang.org/x/sync/singleflight"
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
	// maxCandidates bounds the signatures and bundles considered per image: a repository
	// with thousands of them costs no more than this.
	maxCandidates = 32
	// defaultTimeout bounds a verification whose context has no deadline (the CLI).
	defaultTimeout  = 30 * time.Second
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
}

// Verifier checks verify rules against registries. It is safe for concurrent use.
type Verifier struct {
	transport http.RoundTripper
	keychain  authn.Keychain
	metrics   *Metrics
	results   *lru.Cache // string -> entry[*Outcome]
	tags      *lru.Cache // string -> entry[string], the digest a tag resolves to
	flight    singleflight.Group
	mu        sync.Mutex
	pullers   map[string]*remote.Puller
	now       func() time.Time
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
	return &Verifier{
		transport: o.Transport, keychain: o.Keychain, metrics: o.Metrics,
		results: lru.New(o.CacheEntries), tags: lru.New(o.CacheEntries),
		pullers: map[string]*remote.Puller{}, now: o.Now,
	}
}

// VerifyAll verifies each pending verification and returns, per item, why it failed ("" when
// verified): what policy.Snapshot.Settle takes. Cached results are answered in place; only
// misses go to the registry, in parallel when there are several.
func (v *Verifier) VerifyAll(ctx context.Context, pending []policy.Verification) []policy.VerifyResult {
	outcomes := v.Outcomes(ctx, pending)
	results := make([]policy.VerifyResult, len(outcomes))
	for i, o := range outcomes {
		results[i] = o.Result()
	}
	return results
}

// Result is the outcome as the engine's Settle takes it.
func (o *Outcome) Result() policy.VerifyResult {
	return policy.VerifyResult{Reason: o.Reason, Findings: o.Findings}
}

// Outcomes is VerifyAll with what each verification found (the attestations' findings, when
// a scan expires): for the CLI's report and the audit.
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

// Verify checks one image at its digest against one verify rule: "" when a trusted signer
// signed it (and its attestations pass), else why not.
func (v *Verifier) Verify(ctx context.Context, pv *policy.Verification) string {
	if o, hit := v.lookup(ctx, pv); hit {
		return o.Reason
	}
	return v.fetch(ctx, pv).Reason
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
	o, hit := cached[*Outcome](v, v.results, resultKey(ctx, pv))
	v.metrics.cache("signature", hit)
	return o, hit
}

// fetch verifies in the registry, once for all concurrent callers, and caches the outcome:
// a pass until verifiedTTL or until what it found expires (a scan's maxAge, an ignored
// finding's exception), whichever comes first; a failure briefly.
func (v *Verifier) fetch(ctx context.Context, pv *policy.Verification) *Outcome {
	trust := pv.Rule.Trust.(*Trust)
	key := resultKey(ctx, pv)
	out, err := shared(v, ctx, "outcome|"+key, func(ctx context.Context) (*Outcome, error) {
		o := v.check(ctx, trust, pv.Repository, pv.Digest)
		now := v.now()
		expires := now.Add(verifiedTTL)
		if o.Reason != "" {
			expires = now.Add(failureTTL)
		} else if !o.Expires.IsZero() && o.Expires.Before(expires) {
			expires = o.Expires
		}
		v.results.Add(key, entry[*Outcome]{value: o, expires: expires})
		return o, nil
	})
	if err != nil {
		return &Outcome{Reason: err.Error()}
	}
	return out
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
	if d, ok := cached[string](v, v.tags, key); ok {
		v.metrics.cache("tag", true)
		return d, nil
	}
	v.metrics.cache("tag", false)
	return shared(v, ctx, "tag|"+key, func(ctx context.Context) (string, error) {
		tag, err := name.NewTag(u.Repository+":"+u.Tag, name.StrictValidation)
		if err != nil {
			return "", fmt.Errorf("%q is not a reference the registry client takes: %w", u.Repository+":"+u.Tag, err)
		}
		start := time.Now()
		desc, err := remote.Head(tag, v.remoteOptions(ctx, tag.Context().Registry, trust)...)
		v.metrics.registry("resolve", start)
		if err != nil {
			return "", registryError(tag.RegistryStr(), "resolving the tag "+u.Tag, err)
		}
		d := desc.Digest.String()
		v.tags.Add(key, entry[string]{value: d, expires: v.now().Add(tagTTL)})
		return d, nil
	})
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

// shared runs fn once for all concurrent callers with the same key. fn runs with the first
// caller's deadline but not its cancellation, so that a caller that gives up does not fail
// the others; each caller waits no longer than its own context.
func shared[T any](v *Verifier, ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	ch := v.flight.DoChan(key, func() (any, error) {
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		defer cancel()
		return fn(sctx)
	})
	var zero T
	select {
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		return r.Val.(T), nil
	case <-ctx.Done():
		return zero, fmt.Errorf("the registry did not answer before the request's deadline (%w); retry", context.Cause(ctx))
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
	ropts := []ociremote.Option{ociremote.WithRemoteOptions(v.remoteOptions(ctx, ref.Context().Registry, trust)...)}
	registry := ref.RegistryStr()

	start := time.Now()
	legacy, legacyErr := legacySignatures(ref, ropts)
	v.metrics.registry("signatures", start)
	start = time.Now()
	referrers, referrersErr := listReferrers(ref, ropts)
	v.metrics.registry("referrers", start)
	var bundles []*sgbundle.Bundle
	bundleErr := referrersErr
	if referrersErr == nil {
		start = time.Now()
		bundles, bundleErr = fetchBundles(ref, bundleDescriptors(referrers, types.CosignSignPredicateType), ropts)
		v.metrics.registry("bundles", start)
	}
	if legacyErr != nil && bundleErr != nil {
		return fail("%s", registryError(registry, "listing signatures", legacyErr))
	}

	if reason := v.checkSignatures(ctx, trust, h, ropts, legacy, bundles, legacyErr, bundleErr, registry); reason != "" {
		return &Outcome{Reason: reason}
	}
	if len(trust.attestations) == 0 {
		return &Outcome{}
	}
	return v.checkAttestations(ctx, trust, ref, h, ropts, referrers, referrersErr)
}

func (v *Verifier) checkSignatures(ctx context.Context, trust *Trust, h v1.Hash, ropts []ociremote.Option,
	legacy []oci.Signature, bundles []*sgbundle.Bundle, legacyErr, bundleErr error, registry string) string {
	var problems []string
	for i := range trust.signers {
		s := &trust.signers[i]
		for _, sig := range legacy {
			co := checkOpts(trust, s, s.identities, ropts)
			co.ClaimVerifier = cosign.SimpleClaimVerifier
			if _, err := cosign.VerifyImageSignature(ctx, sig, h, co); err == nil {
				return ""
			} else {
				problems = append(problems, err.Error())
			}
		}
		for _, b := range bundles {
			if _, err := verifyBundle(ctx, trust, s, b, h, ropts, types.CosignSignPredicateType); err == nil {
				return ""
			} else {
				problems = append(problems, err.Error())
			}
		}
	}
	found := len(legacy) + len(bundles)
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
		fmt.Fprintf(&b, "; found %d signature%s, none verified: %s)", found, plural(found), firstProblem(problems))
	}
	return cut(b.String())
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
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

// legacySignatures reads the signatures of the sha256-<hex>.sig tag (none when it does not
// exist), at most maxCandidates of them.
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
		sl = sl[:maxCandidates]
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
// statement is checked once verified), newest first, at most maxCandidates of them.
func bundleDescriptors(referrers []v1.Descriptor, predicateType string) []v1.Descriptor {
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
	slices.SortStableFunc(descs, func(a, b v1.Descriptor) int {
		return strings.Compare(b.Annotations["org.opencontainers.image.created"], a.Annotations["org.opencontainers.image.created"])
	})
	if len(descs) > maxCandidates {
		descs = descs[:maxCandidates]
	}
	return descs
}

// fetchBundles reads the bundles the descriptors name.
func fetchBundles(ref name.Digest, descs []v1.Descriptor, ropts []ociremote.Option) ([]*sgbundle.Bundle, error) {
	var out []*sgbundle.Bundle
	var lastErr error
	for _, d := range descs {
		b, err := ociremote.Bundle(ref.Context().Digest(d.Digest.String()), ropts...)
		if err != nil {
			lastErr = err
			continue
		}
		out = append(out, b)
	}
	if len(out) == 0 && lastErr != nil {
		return nil, lastErr
	}
	return out, nil
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
	return fmt.Errorf("the registry %s failed while %s: %s", registry, operation, cut(err.Error()))
}

func cut(s string) string {
	if len(s) <= maxReasonLength {
		return s
	}
	return s[:maxReasonLength] + "..."
}

// Close releases the verifier's idle registry connections.
func (v *Verifier) Close() {
	if c, ok := v.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
