// Package notationtest makes Notary Project signatures as `notation sign` makes them (with
// notation-go and notation-core-go), a certificate authority with its CRL, and an RFC 3161
// timestamp authority whose clock a test sets.
package notationtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/notaryproject/notation-core-go/signature"
	"github.com/notaryproject/notation-core-go/signature/cose"
	"github.com/notaryproject/notation-core-go/signature/jws"
	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	"github.com/notaryproject/tspclient-go"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// Envelope media types.
const (
	JWS  = jws.MediaTypeEnvelope
	COSE = cose.MediaTypeEnvelope
	// ArtifactType is a Notary signature manifest's artifact type.
	ArtifactType = "application/vnd.cncf.notary.signature"
)

var serial atomic.Int64

// timestampingEKU is the DER of an extended key usage extension holding only
// id-kp-timeStamping (1.3.6.1.5.5.7.3.8).
var timestampingEKU, _ = asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})

func nextSerial() *big.Int { return big.NewInt(time.Now().UnixNano() + serial.Add(1)) }

// CA is a root certificate authority that issues signing certificates.
type CA struct {
	Root *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a root CA named cn, valid from a day ago for a year.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"Acme"}, Country: []string{"US"}},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Root: root, key: key}, nil
}

// PEM is the root certificate, what a trust store holds.
func (c *CA) PEM() string { return PEM(c.Root) }

// PEM encodes certificates.
func PEM(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, cert := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	}
	return b.String()
}

// Signer is a signing key and the certificate the CA issued for it.
type Signer struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	ca   *CA
}

// Subject is the distinguished name tests give their signing certificates; Notation's
// trusted identity for it is "x509.subject: " + Subject(cn).
func Subject(cn string) string { return "C=US, ST=WA, L=Seattle, O=Acme, CN=" + cn }

// Issue issues a code signing certificate for the subject Subject(cn), valid from notBefore
// to notAfter.
func (c *CA) Issue(cn string, notBefore, notAfter time.Time) (*Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Locality: []string{"Seattle"}, Organization: []string{"Acme"}, CommonName: cn},
		NotBefore:    notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Root, &key.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Signer{Cert: cert, key: key, ca: c}, nil
}

// CRL is the CA's certificate revocation list, in PEM, revoking certs, valid until
// nextUpdate.
func (c *CA) CRL(nextUpdate time.Time, revoked ...*x509.Certificate) (string, error) {
	var entries []x509.RevocationListEntry
	for _, r := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: r.SerialNumber, RevocationTime: time.Now().Add(-time.Hour)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: nextSerial(), ThisUpdate: time.Now().Add(-2 * time.Hour), NextUpdate: nextUpdate, RevokedCertificateEntries: entries,
	}, c.Root, c.key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})), nil
}

// TSA is an RFC 3161 timestamp authority over HTTP whose timestamps say the time At returns.
type TSA struct {
	*httptest.Server
	Root *x509.Certificate
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	at   atomic.Pointer[time.Time]
}

// NewTSA starts a timestamp authority on loopback with its own root.
func NewTSA() (*TSA, error) {
	ca, err := NewCA("Acme Timestamping Root")
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "Acme TSA", Organization: []string{"Acme"}},
		NotBefore: ca.Root.NotBefore, NotAfter: ca.Root.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		// RFC 3161: the timestamping extended key usage, the only one, and critical.
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: timestampingEKU}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	t := &TSA{Root: ca.Root, cert: cert, key: key}
	t.Server = httptest.NewServer(http.HandlerFunc(t.serve))
	return t, nil
}

// SetTime makes the TSA's timestamps say at (zero: now).
func (t *TSA) SetTime(at time.Time) { t.at.Store(&at) }

func (t *TSA) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := timestamp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	at := time.Now()
	if p := t.at.Load(); p != nil && !p.IsZero() {
		at = *p
	}
	ts := timestamp.Timestamp{
		HashAlgorithm: req.HashAlgorithm, HashedMessage: req.HashedMessage, Time: at.UTC().Truncate(time.Second),
		Nonce: req.Nonce, Policy: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2}, Accuracy: time.Second,
		AddTSACertificate: true, Certificates: []*x509.Certificate{t.Root},
	}
	resp, err := ts.CreateResponseWithOpts(t.cert, t.key, crypto.SHA256)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/timestamp-reply")
	_, _ = w.Write(resp)
}

// Options says how to sign.
type Options struct {
	// MediaType is JWS (the default) or COSE.
	MediaType string
	// SigningTime is the signature's signing time (default now).
	SigningTime time.Time
	// Expiry is the signature's own expiry (default none).
	Expiry time.Time
	// TSA countersigns the signature when set.
	TSA *TSA
	// SigningAuthority signs with the notary.x509.signingAuthority scheme (AWS Signer's).
	SigningAuthority bool
	// Attributes are extended signed attributes, critical (AWS Signer's profile, its plugin).
	Attributes map[string]string
	// Target, when set, is the descriptor the payload names instead of the image's.
	Target *ocispec.Descriptor
}

// Envelope signs a Notation payload naming target, as notation-core-go does for `notation
// sign`.
func (s *Signer) Envelope(target ocispec.Descriptor, o Options) ([]byte, string, error) {
	mt := o.MediaType
	if mt == "" {
		mt = JWS
	}
	if o.Target != nil {
		target = *o.Target
	}
	payload, err := json.Marshal(map[string]any{"targetArtifact": target})
	if err != nil {
		return nil, "", err
	}
	local, err := signature.NewLocalSigner([]*x509.Certificate{s.Cert, s.ca.Root}, s.key)
	if err != nil {
		return nil, "", err
	}
	req := &signature.SignRequest{
		Payload:       signature.Payload{ContentType: "application/vnd.cncf.notary.payload.v1+json", Content: payload},
		Signer:        local,
		SigningTime:   o.SigningTime,
		Expiry:        o.Expiry,
		SigningScheme: signature.SigningSchemeX509,
		SigningAgent:  "notation-go/1.3.2",
	}
	if req.SigningTime.IsZero() {
		req.SigningTime = time.Now()
	}
	if o.SigningAuthority {
		req.SigningScheme = signature.SigningSchemeX509SigningAuthority
	}
	for k, v := range o.Attributes {
		req.ExtendedSignedAttributes = append(req.ExtendedSignedAttributes, signature.Attribute{Key: k, Critical: true, Value: v})
	}
	if o.TSA != nil {
		if req.Timestamper, err = tspclient.NewHTTPTimestamper(o.TSA.Client(), o.TSA.URL); err != nil {
			return nil, "", err
		}
		req.TSARootCAs = x509.NewCertPool()
		req.TSARootCAs.AddCert(o.TSA.Root)
	}
	env, err := signature.NewEnvelope(mt)
	if err != nil {
		return nil, "", err
	}
	blob, err := env.Sign(req.WithContext(context.Background()))
	return blob, mt, err
}

// Descriptor is the descriptor of the manifest at ref, what a signature's payload names.
func Descriptor(ref name.Digest, c ...registrytest.Credentials) (ocispec.Descriptor, error) {
	opts := []remote.Option{}
	if len(c) > 0 && c[0].Authenticator != nil {
		opts = append(opts, remote.WithAuth(c[0].Authenticator))
	}
	d, err := remote.Head(ref, opts...)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size}, nil
}

// Sign signs the image at ref and pushes the signature as a referrer, as `notation sign`
// stores it (an OCI manifest with the Notary artifact type and the envelope as its layer).
func (s *Signer) Sign(ref name.Digest, o Options, c ...registrytest.Credentials) error {
	target, err := Descriptor(ref, c...)
	if err != nil {
		return err
	}
	blob, mt, err := s.Envelope(target, o)
	if err != nil {
		return err
	}
	return registrytest.PushReferrer(ref, ArtifactType, mt, blob, nil, c...)
}

// SignWithNotation signs the image at ref with notation-go's own signer and repository (what
// the notation CLI runs), over plain HTTP: the manifest and, on a registry without the
// Referrers API, the referrers tag are written by notation-go and oras-go themselves.
func (s *Signer) SignWithNotation(ctx context.Context, ref name.Digest, mediaType string) error {
	gs, err := signer.NewGenericSigner(s.key, []*x509.Certificate{s.Cert, s.ca.Root})
	if err != nil {
		return err
	}
	repo, err := orasremote.NewRepository(ref.Context().Name())
	if err != nil {
		return err
	}
	repo.PlainHTTP = true
	_, err = notation.Sign(ctx, gs, registry.NewRepository(repo), notation.SignOptions{
		ArtifactReference: ref.String(),
		SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: mediaType},
	})
	if err != nil {
		return fmt.Errorf("notation sign: %w", err)
	}
	return nil
}
