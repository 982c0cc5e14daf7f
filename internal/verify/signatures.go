package verify

// Signatures: cosign's legacy .sig tag and sigstore bundles, checked against a rule's signers.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/cosign/v3/pkg/cosign"
	"github.com/sigstore/cosign/v3/pkg/oci"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	"github.com/sigstore/cosign/v3/pkg/types"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"

	"github.com/imagegate/imagegate/internal/text"
)

// checkDigest verifies repo@digest against trust: a signature by any signer, in either
// format, then each attestation rule.
func (v *Verifier) checkDigest(ctx context.Context, trust *Trust, repo, digest string) *Outcome {
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

	// cosign's .sig tag is read only for signers that read cosign's formats; the referrers
	// (sigstore bundles, Notary signatures) are listed once for every kind, and each kind is
	// picked out (and bounded) only where a signer reads it.
	cosign, notary := trust.cosignSigners(), trust.notationSigners()
	var c candidates
	if cosign {
		start := time.Now()
		c.legacy, c.legacyErr = legacyLayers(ref, oopts, ociremote.SignatureTag, "signatures in its sha256-<hex>.sig tag")
		v.metrics.registry("signatures", start)
	}
	start := time.Now()
	referrers, referrersErr := listReferrers(ref, oopts)
	v.metrics.registry("referrers", start)
	c.referrersErr = referrersErr
	var bundleErr, notationErr error
	if referrersErr == nil && cosign {
		c.bundles, bundleErr = bundleDescriptors(referrers, types.CosignSignPredicateType)
	}
	if referrersErr == nil && notary {
		c.notation, notationErr = notationDescriptors(referrers)
	}
	for _, err := range []error{c.legacyErr, bundleErr, notationErr} {
		if errors.Is(err, errTooManyCandidates) {
			return fail("%s", text.Cut(err.Error(), maxReasonLength))
		}
	}
	// Nothing could be listed: the referrers, and the .sig tag where it is read.
	if referrersErr != nil && (c.legacyErr != nil || !cosign) {
		err := referrersErr
		if c.legacyErr != nil {
			err = c.legacyErr
		}
		return &Outcome{Reason: registryError(registry, "listing signatures", err).Error(), transient: isTransient(c.legacyErr) || isTransient(referrersErr)}
	}

	if o := v.checkSignatures(ctx, trust, ref, h, ropts, oopts, &c, registry); o != nil {
		return o
	}
	if len(trust.attestations) == 0 {
		return &Outcome{}
	}
	return v.checkAttestations(ctx, trust, ref, h, ropts, oopts, referrers, referrersErr)
}

// checkSignatures looks for signatures by trust.required different trusted signers (one by
// default), one candidate at a time, and stops as soon as enough verified (nil then); bundles
// are fetched only as they are tried. A signature counts for one signer only: one
// certificate matching two keyless signers is one signature, not two.
func (v *Verifier) checkSignatures(ctx context.Context, trust *Trust, ref name.Digest, h v1.Hash, ropts []remote.Option, oopts []ociremote.Option,
	c *candidates, registry string) *Outcome {
	legacy, descs, legacyErr, bundleErr := c.legacy, c.bundles, c.legacyErr, c.referrersErr
	var problems []string
	// notationProblems are, per notation signer, why the Notary signatures did not verify.
	notationProblems := map[int][]string{}
	m := newSignerMatching(len(trust.signers))
	// consider tries one candidate against the signers: with one signature required, until
	// one verifies it; otherwise against each, so that the candidates can be matched to
	// different signers. It reports whether enough signers are matched.
	consider := func(verifies func(s *signer) error) bool {
		var edges []int
		for i := range trust.signers {
			if err := verifies(&trust.signers[i]); err != nil {
				switch {
				case errors.Is(err, errOtherFormat):
				case trust.signers[i].notation != nil:
					notationProblems[i] = append(notationProblems[i], err.Error())
				default:
					problems = append(problems, err.Error())
				}
				continue
			}
			edges = append(edges, i)
			if trust.required == 1 {
				break
			}
		}
		return m.add(edges) >= trust.required
	}
	// A notation signer at level skip is satisfied without a signature, as in Notation.
	for i := range trust.signers {
		if n := trust.signers[i].notation; n != nil && n.skip && m.add([]int{i}) >= trust.required {
			return nil
		}
	}
	for _, sig := range legacy {
		if consider(func(s *signer) error { return verifyLegacySignature(ctx, trust, s, sig, h, oopts) }) {
			return nil
		}
	}
	start := time.Now()
	unread, transient := eachBundle(ref, descs, ropts, func(b *sgbundle.Bundle) bool {
		return consider(func(s *signer) error {
			_, err := verifyBundle(ctx, trust, s, b, h, oopts, types.CosignSignPredicateType)
			return err
		})
	})
	if len(descs) > 0 {
		v.metrics.registry("bundles", start)
	}
	if len(c.notation) > 0 {
		start := time.Now()
		done, nt := eachNotation(ctx, ref, ropts, c.notation, func(target ocispec.Descriptor, env notationEnvelope) bool {
			return consider(func(s *signer) error {
				if s.notation == nil || s.notation.skip { // skip: matched above, reads no signature
					return errOtherFormat
				}
				return s.notation.verify(ctx, target, ref.String(), env)
			})
		}, func(err string) {
			for i := range trust.signers {
				if trust.signers[i].notation != nil {
					notationProblems[i] = append(notationProblems[i], err)
				}
			}
		})
		v.metrics.registry("notation", start)
		if done {
			return nil
		}
		transient = transient || nt
	}
	count := m.size
	if count >= trust.required {
		return nil
	}
	problems = append(problems, unread...)
	transient = transient || isTransient(legacyErr) || isTransient(bundleErr)
	found := len(legacy) + len(descs)
	var tried, verified, missing []string
	for i := range trust.signers {
		d := trust.signers[i].describe()
		if trust.signers[i].notation != nil && !m.matched(i) {
			d += notationSummary(len(c.notation), notationProblems[i], c.referrersErr)
		}
		tried = append(tried, d)
		if m.matched(i) {
			verified = append(verified, d)
		} else {
			missing = append(missing, d)
		}
	}
	var b strings.Builder
	if trust.required > 1 {
		fmt.Fprintf(&b, "signatures by %d different trusted signers are required, %d verified", trust.required, count)
		if count > 0 {
			fmt.Fprintf(&b, ": %s", strings.Join(verified, ", "))
		}
		b.WriteString(" (missing: ")
		b.WriteString(strings.Join(missing, ", "))
	} else {
		b.WriteString("no signature by a trusted signer (tried: ")
		b.WriteString(strings.Join(tried, ", "))
	}
	switch {
	case !trust.cosignSigners():
		b.WriteString(")")
	case found == 0 && legacyErr == nil && bundleErr == nil:
		b.WriteString("; found no signature: neither a sha256-<hex>.sig tag nor a sigstore bundle among the referrers)")
	case found == 0:
		err := legacyErr
		if err == nil {
			err = bundleErr
		}
		fmt.Fprintf(&b, "; found no signature, and %s)", registryError(registry, "listing signatures", err))
	case count > 0:
		fmt.Fprintf(&b, "; found %d %s, none verified for the missing signers: %s)", found, text.Plural(found, "signature", "signatures"), firstProblem(problems))
	default:
		fmt.Fprintf(&b, "; found %d %s, none verified: %s)", found, text.Plural(found, "signature", "signatures"), firstProblem(problems))
	}
	return &Outcome{Reason: text.Cut(b.String(), maxReasonLength), transient: transient}
}

// candidates are the signatures found for an image, by format.
type candidates struct {
	legacy   []oci.Signature // cosign's .sig tag
	bundles  []v1.Descriptor // sigstore bundles among the referrers
	notation []v1.Descriptor // Notary signatures among the referrers
	// legacyErr and referrersErr say why the .sig tag or the referrers could not be read.
	legacyErr, referrersErr error
}

// errOtherFormat is what a signer answers for a signature of a format it does not read (a
// notation signer and a cosign signature, a key and a Notary signature): not a problem to
// report.
var errOtherFormat = errors.New("a signature of another format")

// eachNotation reads the Notary signatures one at a time (notation-go's Repository over the
// registry client) and hands each, with the descriptor of the manifest they must name, to use
// until use returns true (done then). What cannot be read is told to unread; transient says
// a failure was the registry's or the network's.
func eachNotation(ctx context.Context, ref name.Digest, ropts []remote.Option, descs []v1.Descriptor, use func(ocispec.Descriptor, notationEnvelope) bool, unread func(string)) (done, transient bool) {
	repo := &notationRepository{ref: ref, ropts: ropts, signatures: descs}
	target, err := repo.Resolve(ctx, ref.DigestStr())
	if err != nil {
		unread("the image's manifest could not be read: " + err.Error())
		return false, isTransient(err)
	}
	err = repo.ListSignatures(ctx, target, func(descs []ocispec.Descriptor) error {
		for _, d := range descs {
			blob, sd, err := repo.FetchSignatureBlob(ctx, d)
			if err != nil {
				transient = transient || isTransient(err)
				unread("a Notary signature could not be read: " + err.Error())
				continue
			}
			if use(target, notationEnvelope{blob: blob, mediaType: sd.MediaType}) {
				done = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		unread(err.Error())
	}
	return done, transient
}

// notationSummary says, after a notation signer's name, what its Notary signatures were.
func notationSummary(found int, problems []string, listErr error) string {
	switch {
	case found == 0 && listErr != nil:
		return " (no Notary signature found: the referrers could not be listed)"
	case found == 0:
		return " (no Notary signature found among the referrers)"
	}
	return fmt.Sprintf(" (%d Notary %s found: %s)", found, text.Plural(found, "signature", "signatures"), firstProblem(problems))
}

// signerMatching matches verified signatures to the signers they verified under, each
// signature to one signer and each signer to one signature (a bipartite matching, grown by
// augmenting paths as signatures arrive), so that the number of different signers that
// signed is counted right whatever the order of the candidates.
type signerMatching struct {
	edges  [][]int // per signature, the signers it verified under
	signer []int   // per signer, the signature matched to it, or -1
	size   int
}

func newSignerMatching(signers int) *signerMatching {
	m := &signerMatching{signer: make([]int, signers)}
	for i := range m.signer {
		m.signer[i] = -1
	}
	return m
}

// add adds a signature and the signers it verified under, and returns the matching's size.
func (m *signerMatching) add(edges []int) int {
	if len(edges) == 0 {
		return m.size
	}
	m.edges = append(m.edges, edges)
	if m.augment(len(m.edges)-1, make([]bool, len(m.signer))) {
		m.size++
	}
	return m.size
}

func (m *signerMatching) augment(sig int, seen []bool) bool {
	for _, s := range m.edges[sig] {
		if seen[s] {
			continue
		}
		seen[s] = true
		if m.signer[s] < 0 || m.augment(m.signer[s], seen) {
			m.signer[s] = sig
			return true
		}
	}
	return false
}

func (m *signerMatching) matched(signer int) bool { return m.signer[signer] >= 0 }

// verifyLegacySignature checks one signature of the .sig tag against s: nil when it verifies.
func verifyLegacySignature(ctx context.Context, trust *Trust, s *signer, sig oci.Signature, h v1.Hash, oopts []ociremote.Option) error {
	if s.notation != nil {
		return errOtherFormat
	}
	var errs []error
	var material *pkiMaterial
	if s.pki != nil {
		// The intermediates the signature carries (cosign sign --certificate-chain) help
		// build a chain to the signer's roots; they are not trusted for themselves.
		chain, err := sig.Chain()
		if err != nil {
			return fmt.Errorf("the signature's certificate chain does not parse: %w", err)
		}
		extra, err := signatureIntermediates(chain)
		if err != nil {
			return err
		}
		material = s.pki.withIntermediates(extra)
	}
	for _, a := range s.attempts(false) {
		co := checkOpts(trust, s, a.ids, oopts)
		if material != nil {
			co.TrustedMaterial = material
		}
		co.ClaimVerifier = cosign.SimpleClaimVerifier
		if _, err := cosign.VerifyImageSignature(ctx, sig, h, co); err != nil {
			if material != nil {
				cert, _ := sig.Cert()
				err = material.explain(err, cert, trust.tlog)
			}
			errs = append(errs, err)
			continue
		}
		if err := a.accept(sig.Cert); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	return errors.Join(errs...)
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
	material := trust.root
	if s.pki != nil {
		material = s.pki
	}
	return &cosign.CheckOpts{
		RegistryClientOpts: ropts,
		TrustedMaterial:    material,
		SigVerifier:        s.key,
		Identities:         ids,
		IgnoreTlog:         !trust.tlog,
		// Certificates must carry SCTs when the trusted root lists CT logs (public Sigstore
		// does); a root without CT logs is a private Fulcio without one.
		// A private CA (a certificate signer) has none.
		IgnoreSCT: len(material.CTLogs()) == 0,
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

// legacyLayers reads the layers of a legacy cosign tag of ref (tagOf names it: the
// sha256-<hex>.sig or .att tag); none when the tag does not exist. More than maxCandidates
// is an error naming what.
func legacyLayers(ref name.Digest, ropts []ociremote.Option, tagOf func(name.Reference, ...ociremote.Option) (name.Tag, error), what string) ([]oci.Signature, error) {
	tag, err := tagOf(ref, ropts...)
	if err != nil {
		return nil, err
	}
	layers, err := ociremote.Signatures(tag, ropts...)
	if err != nil {
		return nil, err
	}
	sl, err := layers.Get()
	if err != nil {
		return nil, err
	}
	if len(sl) > maxCandidates {
		return nil, tooMany(what, len(sl))
	}
	return sl, nil
}
