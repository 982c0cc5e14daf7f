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
}

// Verifier checks verify rules against registries. It is safe for concurrent use.
type Verifier struct {
	transport http.RoundTripper
	keychain  authn.Keychain
	metrics   *Metrics
	results   *lru.Cache // string -> entry
	tags      *lru.Cache // string -> entry
	flight    singleflight.Group
	mu        sync.Mutex
	pullers   map[string]*remote.Puller
	now       func() time.Time
}

type entry struct {
	value   string // the failure reason ("" verified), or the digest a tag resolves to
	expires time.Time
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
	return &Verifier{
		transport: o.Transport, keychain: o.Keychain, metrics: o.Metrics,
		results: lru.New(o.CacheEntries), tags: lru.New(o.CacheEntries),
		pullers: map[string]*remote.Puller{}, now: time.Now,
	}
}

// VerifyAll verifies each pending verification and returns, per item, why it failed ("" when
// verified): what policy.Snapshot.Settle takes. Cached results are answered in place; only
// misses go to the registry, in parallel when there are several.
func (v *Verifier) VerifyAll(ctx context.Context, pending []policy.Verification) []string {
	failures := make([]string, len(pending))
	var misses []int
	for i := range pending {
		if reason, hit := v.lookup(ctx, &pending[i]); hit {
			failures[i] = reason
		} else {
			misses = append(misses, i)
		}
	}
	if len(misses) == 1 {
		failures[misses[0]] = v.fetch(ctx, &pending[misses[0]])
		return failures
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for _, i := range misses {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			failures[i] = v.fetch(ctx, &pending[i])
		}()
	}
	wg.Wait()
	return failures
}

// Verify checks one image at its digest against one verify rule: "" when a trusted signer
// signed it, else why not.
func (v *Verifier) Verify(ctx context.Context, pv *policy.Verification) string {
	if reason, hit := v.lookup(ctx, pv); hit {
		return reason
	}
	return v.fetch(ctx, pv)
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

// lookup answers from the cache: the result and true on a hit. A rule without trust material
// is answered at once (it cannot verify anything).
func (v *Verifier) lookup(ctx context.Context, pv *policy.Verification) (string, bool) {
	if trust, ok := pv.Rule.Trust.(*Trust); !ok || trust == nil {
		return "its verify rule has no trust material loaded, so nothing can be verified", true
	}
	reason, hit := v.cached(v.results, resultKey(ctx, pv))
	v.metrics.cache("signature", hit)
	return reason, hit
}

// fetch verifies in the registry, once for all concurrent callers, and caches the result.
func (v *Verifier) fetch(ctx context.Context, pv *policy.Verification) string {
	trust := pv.Rule.Trust.(*Trust)
	key := resultKey(ctx, pv)
	reason, err := v.shared(ctx, key, func(ctx context.Context) (string, error) {
		reason := v.check(ctx, trust, pv.Repository, pv.Digest)
		ttl := verifiedTTL
		if reason != "" {
			ttl = failureTTL
		}
		v.results.Add(key, entry{value: reason, expires: v.now().Add(ttl)})
		return reason, nil
	})
	if err != nil {
		return err.Error()
	}
	return reason
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
	if d, ok := v.cached(v.tags, key); ok {
		v.metrics.cache("tag", true)
		return d, nil
	}
	v.metrics.cache("tag", false)
	return v.shared(ctx, key, func(ctx context.Context) (string, error) {
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
		v.tags.Add(key, entry{value: d, expires: v.now().Add(tagTTL)})
		return d, nil
	})
}

func (v *Verifier) cached(c *lru.Cache, key string) (string, bool) {
	x, ok := c.Get(key)
	if !ok {
		return "", false
	}
	e := x.(entry)
	if v.now().After(e.expires) {
		c.Remove(key)
		return "", false
	}
	return e.value, true
}

// shared runs fn once for all concurrent callers with the same key. fn runs with the first
// caller's deadline but not its cancellation, so that a caller that gives up does not fail
// the others; each caller waits no longer than its own context.
func (v *Verifier) shared(ctx context.Context, key string, fn func(context.Context) (string, error)) (string, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	ch := v.flight.DoChan(key, func() (any, error) {
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		defer cancel()
		return fn(sctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("the registry did not answer before the request's deadline (%w); retry", context.Cause(ctx))
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

// check verifies repo@digest against trust: any signer suffices, in either format.
func (v *Verifier) check(ctx context.Context, trust *Trust, repo, digest string) string {
	ref, err := name.NewDigest(repo+"@"+digest, name.StrictValidation)
	if err != nil {
		return fmt.Sprintf("%q is not a reference the registry client takes: %v", repo+"@"+digest, err)
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return fmt.Sprintf("its digest cannot be verified: %v", err)
	}
	ropts := []ociremote.Option{ociremote.WithRemoteOptions(v.remoteOptions(ctx, ref.Context().Registry, trust)...)}
	registry := ref.RegistryStr()

	start := time.Now()
	legacy, legacyErr := legacySignatures(ref, ropts)
	v.metrics.registry("signatures", start)
	start = time.Now()
	bundles, bundleErr := signatureBundles(ref, ropts)
	v.metrics.registry("referrers", start)
	if legacyErr != nil && bundleErr != nil {
		return registryError(registry, "listing signatures", legacyErr).Error()
	}

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
			if err := verifyBundle(ctx, trust, s, b, h, ropts); err == nil {
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

// signatureBundles reads the sigstore bundles among the image's referrers (the Referrers API,
// or the sha256-<hex> tag where the registry lacks it) whose predicate is cosign's image
// signature, newest first, at most maxCandidates of them.
func signatureBundles(ref name.Digest, ropts []ociremote.Option) ([]*sgbundle.Bundle, error) {
	idx, err := ociremote.Referrers(ref, "", ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, err
	}
	var descs []v1.Descriptor
	for _, d := range idx.Manifests {
		// Registries report the manifest's artifactType or its config's media type; cosign
		// also annotates the predicate type, which tells signatures from attestations.
		pt, annotated := d.Annotations[ociremote.BundlePredicateType]
		if !annotated && !strings.HasPrefix(d.ArtifactType, "application/vnd.dev.sigstore.bundle") {
			continue
		}
		if annotated && pt != types.CosignSignPredicateType {
			continue // an attestation, not a signature
		}
		descs = append(descs, d)
	}
	slices.SortStableFunc(descs, func(a, b v1.Descriptor) int {
		return strings.Compare(b.Annotations["org.opencontainers.image.created"], a.Annotations["org.opencontainers.image.created"])
	})
	if len(descs) > maxCandidates {
		descs = descs[:maxCandidates]
	}
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
// an in-toto statement whose subject is the digest, with cosign's image-signature predicate.
func verifyBundle(ctx context.Context, trust *Trust, s *signer, b *sgbundle.Bundle, h v1.Hash, ropts []ociremote.Option) error {
	want, err := hex.DecodeString(h.Hex)
	if err != nil {
		return err
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
		return signaturePredicate(b)
	}
	return errors.Join(errs...)
}

// signaturePredicate accepts a bundle only when its DSSE statement is cosign's image
// signature: a signed SBOM or scan of the same digest is not a signature of it.
func signaturePredicate(b *sgbundle.Bundle) error {
	env, ok := b.Content.(*protobundle.Bundle_DsseEnvelope)
	if !ok || env.DsseEnvelope == nil {
		return errors.New("the bundle holds no DSSE envelope, so it is not a cosign image signature")
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	if err := json.Unmarshal(env.DsseEnvelope.Payload, &st); err != nil {
		return fmt.Errorf("the bundle's statement does not parse: %w", err)
	}
	if st.PredicateType != types.CosignSignPredicateType {
		return fmt.Errorf("the bundle's predicate is %q, not an image signature (%s)", st.PredicateType, types.CosignSignPredicateType)
	}
	return nil
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
