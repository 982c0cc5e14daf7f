package verify

// Notary Project signatures (`notation sign`): found among the image's OCI referrers, read
// through a notation-go Repository over imagegate's registry client (the same credentials,
// bounds and cache as cosign signatures), and verified by notation-go against one trust
// policy statement per signer, with trust stores held in memory. No Notation plugin process
// is run, and nothing is fetched to check revocation.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/notaryproject/notation-core-go/revocation"
	revocationresult "github.com/notaryproject/notation-core-go/revocation/result"
	"github.com/notaryproject/notation-core-go/signature"
	"github.com/notaryproject/notation-core-go/signature/cose"
	"github.com/notaryproject/notation-core-go/signature/jws"
	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/registry"
	notationverifier "github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	pluginframework "github.com/notaryproject/notation-plugin-framework-go/plugin"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/text"
)

const (
	// notationArtifactType is the artifact type of a Notary Project signature manifest.
	notationArtifactType = "application/vnd.cncf.notary.signature"
	// maxNotationEnvelope bounds one signature envelope (a JWS or COSE envelope with its
	// certificate chain and timestamp is a few kilobytes).
	maxNotationEnvelope = 256 << 10
	// maxCRLs bounds the CRLs one signer reads.
	maxCRLs = 64
)

// notationSigner is a Notation trust policy statement, ready to verify envelopes with.
type notationSigner struct {
	verifier notation.Verifier
	// skip: level skip, so the signer is satisfied without a signature (as in Notation).
	skip bool
	// stores names the trust stores for messages: "ca:acme-root", ...
	stores []string
}

// compileNotationSigner reads a notation signer's trust stores and CRLs and builds its
// notation-go verifier. It returns what the trust version hashes.
func compileNotationSigner(src Sources, signerName string, n *v1alpha1.NotationSigner) (*notationSigner, []byte, error) {
	h := sha256.New()
	spec, _ := json.Marshal(n)
	h.Write(spec)
	level := or(string(n.SignatureVerification.Level), string(v1alpha1.NotationStrict))
	ns := &notationSigner{skip: level == string(v1alpha1.NotationSkip)}
	store := memoryTrustStore{}
	for i := range n.TrustStores {
		ts := &n.TrustStores[i]
		data := []byte(ts.Certificates)
		if ref := ts.ConfigMapRef; ref.Name != "" {
			s, err := configMapKey(src, fmt.Sprintf("notation.trustStores[%d].configMapRef", i), ref.Name, or(ref.Key, "ca.crt"))
			if err != nil {
				return nil, nil, err
			}
			data = []byte(s)
		}
		h.Write(data)
		certs, err := parseTrustStore(data, ts.Type)
		if err != nil {
			return nil, nil, fmt.Errorf("notation.trustStores[%d] %s:%s: %w", i, ts.Type, ts.Name, err)
		}
		id := string(ts.Type) + ":" + ts.Name
		store[id] = certs
		ns.stores = append(ns.stores, id)
	}
	var crls []*x509.RevocationList
	if ref := n.CRLs; ref.Name != "" {
		s, err := configMapKey(src, "notation.crls", ref.Name, or(ref.Key, "crls.pem"))
		if err != nil {
			return nil, nil, err
		}
		h.Write([]byte(s))
		if crls, err = parseCRLs([]byte(s)); err != nil {
			return nil, nil, fmt.Errorf("notation.crls: ConfigMap %q: %w", ref.Name, err)
		}
	}
	sv := trustpolicy.SignatureVerification{VerificationLevel: level, VerifyTimestamp: trustpolicy.TimestampOption(n.SignatureVerification.VerifyTimestamp)}
	if o := n.SignatureVerification.Override; o != (v1alpha1.NotationOverride{}) {
		sv.Override = map[trustpolicy.ValidationType]trustpolicy.ValidationAction{}
		for t, a := range map[trustpolicy.ValidationType]v1alpha1.NotationAction{
			trustpolicy.TypeAuthenticity: o.Authenticity, trustpolicy.TypeAuthenticTimestamp: o.AuthenticTimestamp,
			trustpolicy.TypeExpiry: o.Expiry, trustpolicy.TypeRevocation: o.Revocation,
		} {
			if a != "" {
				sv.Override[t] = trustpolicy.ValidationAction(a)
			}
		}
	}
	doc := &trustpolicy.Document{Version: "1.0", TrustPolicies: []trustpolicy.TrustPolicy{{
		Name: signerName, RegistryScopes: []string{"*"}, SignatureVerification: sv,
		TrustStores: ns.stores, TrustedIdentities: n.TrustedIdentities,
	}}}
	if err := doc.Validate(); err != nil {
		// notation-go's words name the statement as the trust policy does; the signer's name
		// is the statement's.
		return nil, nil, fmt.Errorf("notation: %w", err)
	}
	rv := crlValidator{crls: crls}
	v, err := notationverifier.NewWithOptions(doc, store, builtinPlugins{}, notationverifier.VerifierOptions{
		RevocationCodeSigningValidator: rv, RevocationTimestampingValidator: rv,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("notation: %w", err)
	}
	ns.verifier = v
	return ns, h.Sum(nil), nil
}

// parseTrustStore reads a trust store's PEM certificates, bounded, as Notation's file trust
// store accepts them: CA certificates (or self-signed ones), and only roots for a TSA store.
func parseTrustStore(data []byte, typ v1alpha1.NotationTrustStoreType) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(data, "CERTIFICATE", "certificate", maxCACertificates)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, der := range blocks {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %w", i+1, err)
		}
		if typ == v1alpha1.NotationStoreTSA && !selfSigned(cert) {
			return nil, fmt.Errorf("certificate %d (subject %q) is not a root: a tsa trust store holds the timestamp authorities' root certificates", i+1, text.Cut(cert.Subject.String(), 256))
		}
		certs = append(certs, cert)
	}
	if err := truststore.ValidateCertificates(certs); err != nil {
		return nil, err
	}
	return certs, nil
}

// memoryTrustStore is notation-go's X509TrustStore over the certificates a policy names,
// by "type:name".
type memoryTrustStore map[string][]*x509.Certificate

func (m memoryTrustStore) GetCertificates(_ context.Context, typ truststore.Type, name string) ([]*x509.Certificate, error) {
	certs, ok := m[string(typ)+":"+name]
	if !ok {
		return nil, truststore.TrustStoreError{Msg: fmt.Sprintf("the signer has no trust store %s:%s", typ, name)}
	}
	return certs, nil
}

// parseCRLs reads PEM certificate revocation lists ("X509 CRL" blocks), bounded.
func parseCRLs(data []byte) ([]*x509.RevocationList, error) {
	blocks, err := pemBlocks(data, "X509 CRL", "CRL", maxCRLs)
	if err != nil {
		return nil, err
	}
	out := make([]*x509.RevocationList, 0, len(blocks))
	for i, der := range blocks {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("CRL %d does not parse: %w", i+1, err)
		}
		out = append(out, crl)
	}
	return out, nil
}

// crlValidator checks certificate chains against the configured CRLs only: a certificate is
// revoked when the CRL of its issuer (signed by the next certificate of the chain) lists it,
// and its status is unknown when that CRL is past its next update. A certificate whose
// issuer has no configured CRL is not checked, and nothing is ever fetched.
type crlValidator struct {
	crls []*x509.RevocationList
}

func (c crlValidator) ValidateContext(_ context.Context, opts revocation.ValidateContextOptions) ([]*revocationresult.CertRevocationResult, error) {
	chain := opts.CertChain
	out := make([]*revocationresult.CertRevocationResult, len(chain))
	now := time.Now()
	for i, cert := range chain {
		r := &revocationresult.CertRevocationResult{Result: revocationresult.ResultNonRevokable, RevocationMethod: revocationresult.RevocationMethodUnknown}
		out[i] = r
		if i+1 >= len(chain) {
			continue // the root
		}
		issuer := chain[i+1]
		for _, crl := range c.crls {
			if !bytes.Equal(crl.RawIssuer, cert.RawIssuer) || crl.CheckSignatureFrom(issuer) != nil {
				continue
			}
			r.RevocationMethod = revocationresult.RevocationMethodCRL
			switch {
			case !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate):
				r.Result = revocationresult.ResultUnknown
				r.ServerResults = []*revocationresult.ServerResult{revocationresult.NewServerResult(revocationresult.ResultUnknown, "configured CRL",
					fmt.Errorf("the configured CRL of %q expired at %s", issuer.Subject, crl.NextUpdate.UTC().Format(time.RFC3339)))}
			case revokedBy(crl, cert, opts.AuthenticSigningTime):
				r.Result = revocationresult.ResultRevoked
			default:
				r.Result = revocationresult.ResultOK
			}
			break
		}
	}
	return out, nil
}

// revokedBy reports whether crl revokes cert: listed, and, when the signing time is authentic
// (a signing authority's), revoked before it.
func revokedBy(crl *x509.RevocationList, cert *x509.Certificate, signed time.Time) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber == nil || e.SerialNumber.Cmp(cert.SerialNumber) != 0 {
			continue
		}
		return signed.IsZero() || !e.RevocationTime.After(signed)
	}
	return false
}

// noPlugins begins the refusal of a signature that requires a Notation plugin.
const noPlugins = "imagegate runs no Notation plugins"

// awsSignerPlugin is the name of AWS Signer's Notation plugin, which AWS Signer's signatures
// require for verification (a critical signed attribute).
const awsSignerPlugin = "com.amazonaws.signer.notation.plugin"

// builtinPlugins is notation-go's plugin manager with no plugin process: it has, in process,
// the trusted-identity check of AWS Signer's plugin (its signing profile ARNs), and nothing
// else. Revocation stays notation-go's, against the configured CRLs.
type builtinPlugins struct{}

func (builtinPlugins) Get(_ context.Context, name string) (pluginframework.Plugin, error) {
	if name == awsSignerPlugin {
		return awsSignerIdentity{}, nil
	}
	return nil, fmt.Errorf("%s, and the signature requires the plugin %q", noPlugins, text.Cut(name, 128))
}

func (builtinPlugins) List(context.Context) ([]string, error) { return []string{awsSignerPlugin}, nil }

// AWS Signer's signed attributes.
const (
	awsSigningProfileVersion = "com.amazonaws.signer.signingProfileVersion"
	awsSigningJob            = "com.amazonaws.signer.signingJob"
)

// awsSignerIdentity matches the signing profile version AWS Signer wrote into the signature
// against the trusted identities: a signing profile ARN matches any of its versions, a
// profile version ARN only itself (as AWS Signer's plugin does).
type awsSignerIdentity struct{}

func (awsSignerIdentity) GetMetadata(context.Context, *pluginframework.GetMetadataRequest) (*pluginframework.GetMetadataResponse, error) {
	return &pluginframework.GetMetadataResponse{
		Name: awsSignerPlugin, Version: "1.0.0", SupportedContractVersions: []string{pluginframework.ContractVersion},
		Capabilities: []pluginframework.Capability{pluginframework.CapabilityTrustedIdentityVerifier},
	}, nil
}

func (awsSignerIdentity) VerifySignature(_ context.Context, req *pluginframework.VerifySignatureRequest) (*pluginframework.VerifySignatureResponse, error) {
	got, _ := req.Signature.CriticalAttributes.ExtendedAttributes[awsSigningProfileVersion].(string)
	if got == "" {
		return nil, fmt.Errorf("the signature has no %s attribute", awsSigningProfileVersion)
	}
	result := &pluginframework.VerificationResult{Reason: fmt.Sprintf("signing profile version %s is not among the trusted identities", text.Cut(got, 256))}
	for _, id := range req.TrustPolicy.TrustedIdentities {
		a, err := arn.Parse(id)
		if err != nil || a.Service != "signer" || !strings.HasPrefix(a.Resource, "/signing-profiles/") {
			continue
		}
		switch strings.Count(a.Resource, "/") {
		case 2: // a profile: any of its versions
			if i := strings.LastIndex(got, "/"); i > 0 && strings.EqualFold(got[:i], id) {
				result.Success = true
			}
		case 3: // one version of a profile
			result.Success = result.Success || strings.EqualFold(got, id)
		}
		if result.Success {
			result.Reason = "signing profile " + id
			break
		}
	}
	return &pluginframework.VerifySignatureResponse{
		VerificationResults: map[pluginframework.Capability]*pluginframework.VerificationResult{pluginframework.CapabilityTrustedIdentityVerifier: result},
		ProcessedAttributes: []any{awsSigningProfileVersion, awsSigningJob},
	}, nil
}

func (awsSignerIdentity) DescribeKey(context.Context, *pluginframework.DescribeKeyRequest) (*pluginframework.DescribeKeyResponse, error) {
	return nil, errors.New("imagegate does not sign")
}

func (awsSignerIdentity) GenerateSignature(context.Context, *pluginframework.GenerateSignatureRequest) (*pluginframework.GenerateSignatureResponse, error) {
	return nil, errors.New("imagegate does not sign")
}

func (awsSignerIdentity) GenerateEnvelope(context.Context, *pluginframework.GenerateEnvelopeRequest) (*pluginframework.GenerateEnvelopeResponse, error) {
	return nil, errors.New("imagegate does not sign")
}

// notationDescriptors picks the Notary signatures among the referrers, in the registry's
// order; more than maxCandidates is an error, not a cut.
func notationDescriptors(referrers []v1.Descriptor) ([]v1.Descriptor, error) {
	var descs []v1.Descriptor
	for _, d := range referrers {
		if d.ArtifactType == notationArtifactType {
			descs = append(descs, d)
		}
	}
	if len(descs) > maxCandidates {
		return nil, tooMany("Notary signatures among its referrers", len(descs))
	}
	return descs, nil
}

// notationRepository is notation-go's registry.Repository over imagegate's registry client,
// read-only, for one image: the referrers were listed once for every kind of signature, and
// signatures are the Notary ones among them.
type notationRepository struct {
	ref        name.Digest
	ropts      []remote.Option
	signatures []v1.Descriptor
}

var _ registry.Repository = (*notationRepository)(nil)

// Resolve returns the descriptor of the manifest at a digest (a HEAD request), which the
// signature's payload must name exactly (media type, digest and size).
func (r *notationRepository) Resolve(_ context.Context, reference string) (ocispec.Descriptor, error) {
	want, err := v1.NewHash(reference)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve %q: only digests are resolved: %w", text.Cut(reference, 128), err)
	}
	d, err := remote.Head(r.ref.Context().Digest(reference), r.ropts...)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if d.Digest != want {
		return ocispec.Descriptor{}, fmt.Errorf("the registry answered for %s with the digest %s", want, d.Digest)
	}
	return ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size}, nil
}

func (r *notationRepository) ListSignatures(_ context.Context, _ ocispec.Descriptor, fn func([]ocispec.Descriptor) error) error {
	if len(r.signatures) == 0 {
		return nil
	}
	out := make([]ocispec.Descriptor, len(r.signatures))
	for i, d := range r.signatures {
		out[i] = ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size, ArtifactType: d.ArtifactType}
	}
	return fn(out)
}

// FetchSignatureBlob reads a signature manifest and its one envelope layer (JWS or COSE),
// bounded, as stored: the bytes are checked against their digest as they are read.
func (r *notationRepository) FetchSignatureBlob(_ context.Context, desc ocispec.Descriptor) ([]byte, ocispec.Descriptor, error) {
	img, err := remote.Image(r.ref.Context().Digest(desc.Digest.String()), r.ropts...)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	if m.ArtifactType != notationArtifactType && string(m.Config.MediaType) != notationArtifactType {
		return nil, ocispec.Descriptor{}, fmt.Errorf("the signature manifest's artifact type is %q, not %s", text.Cut(m.ArtifactType, 128), notationArtifactType)
	}
	if len(m.Layers) != 1 {
		return nil, ocispec.Descriptor{}, fmt.Errorf("the signature manifest has %d layers, not 1", len(m.Layers))
	}
	l := m.Layers[0]
	if mt := string(l.MediaType); mt != jws.MediaTypeEnvelope && mt != cose.MediaTypeEnvelope {
		return nil, ocispec.Descriptor{}, fmt.Errorf("the signature envelope's media type is %q, neither %s nor %s", text.Cut(mt, 128), jws.MediaTypeEnvelope, cose.MediaTypeEnvelope)
	}
	if l.Size > maxNotationEnvelope {
		return nil, ocispec.Descriptor{}, fmt.Errorf("the signature envelope is %d bytes, more than the %d imagegate reads", l.Size, maxNotationEnvelope)
	}
	layer, err := img.LayerByDigest(l.Digest)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	defer func() { _ = rc.Close() }()
	blob, err := io.ReadAll(io.LimitReader(rc, maxNotationEnvelope+1))
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	if int64(len(blob)) != l.Size {
		return nil, ocispec.Descriptor{}, fmt.Errorf("the signature envelope is %d bytes, not the %d its manifest says", len(blob), l.Size)
	}
	return blob, ocispec.Descriptor{MediaType: string(l.MediaType), Digest: digest.Digest(l.Digest.String()), Size: l.Size}, nil
}

func (r *notationRepository) PushSignature(context.Context, string, []byte, ocispec.Descriptor, map[string]string) (ocispec.Descriptor, ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, ocispec.Descriptor{}, errors.New("imagegate does not push signatures")
}

// notationEnvelope is one Notary signature read from the registry.
type notationEnvelope struct {
	blob      []byte
	mediaType string
}

// verify checks one envelope against the signer's trust policy statement, at the digest the
// Pod runs (target): nil when it verifies.
func (n *notationSigner) verify(ctx context.Context, target ocispec.Descriptor, artifact string, env notationEnvelope) error {
	outcome, err := n.verifier.Verify(ctx, target, env.blob, notation.VerifierVerifyOptions{ArtifactReference: artifact, SignatureMediaType: env.mediaType})
	if err == nil {
		return nil
	}
	return n.explain(outcome, err)
}

// explain says why notation-go refused an envelope, in the words of the trust policy.
func (n *notationSigner) explain(outcome *notation.VerificationOutcome, err error) error {
	var subject string
	if outcome != nil && outcome.EnvelopeContent != nil && len(outcome.EnvelopeContent.SignerInfo.CertificateChain) > 0 {
		subject = outcome.EnvelopeContent.SignerInfo.CertificateChain[0].Subject.String()
	}
	var authErr *signature.SignatureAuthenticityError
	msg := err.Error()
	switch {
	case errors.As(err, &authErr), strings.Contains(msg, "no trusted certificates are found"):
		return fmt.Errorf("certificate chain not trusted by trust store %s (signing certificate %q)", quoteStores(n.stores), text.Cut(subject, 256))
	case strings.Contains(msg, "does not match the X.509 trusted identities"):
		return fmt.Errorf("signing certificate %q is not one of the trusted identities", text.Cut(subject, 256))
	case strings.Contains(msg, noPlugins):
		_, rest, _ := strings.Cut(msg, noPlugins)
		return errors.New(noPlugins + rest)
	case strings.Contains(msg, "failed with reason "):
		// A plugin's (the in-process AWS Signer identity check's) reason, in its words.
		_, quoted, _ := strings.Cut(msg, "failed with reason ")
		if reason, err := strconv.Unquote(quoted); err == nil {
			return errors.New(reason)
		}
	case strings.Contains(msg, "no timestamp countersignature was found"):
		return fmt.Errorf("the signing certificate %q has expired, and the signature has no timestamp countersignature to show it was valid when it signed", text.Cut(subject, 256))
	case strings.Contains(msg, "validity period") && !n.hasTSA():
		return fmt.Errorf("%s (the signer has no tsa trust store, so a timestamp countersignature is not read)", text.Cut(msg, 300))
	case msg == "content descriptor mismatch":
		return errors.New("the signature is of another artifact: its payload does not name this digest, media type and size")
	}
	return fmt.Errorf("%s", text.Cut(msg, 300))
}

func (n *notationSigner) hasTSA() bool {
	for _, s := range n.stores {
		if strings.HasPrefix(s, string(v1alpha1.NotationStoreTSA)+":") {
			return true
		}
	}
	return false
}

func quoteStores(stores []string) string {
	var q []string
	for _, s := range stores {
		if !strings.HasPrefix(s, string(v1alpha1.NotationStoreTSA)+":") {
			_, name, _ := strings.Cut(s, ":")
			q = append(q, fmt.Sprintf("%q", name))
		}
	}
	return strings.Join(q, ", ")
}
