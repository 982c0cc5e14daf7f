package registrytest

// A private certificate authority, and signatures made with its certificates as
// `cosign sign --key k --certificate leaf.pem --certificate-chain chain.pem` makes them.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/cosign/v3/pkg/oci/static"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
)

// PKI is a private certificate authority: a root and an intermediate that issues signing
// certificates.
type PKI struct {
	Root, Intermediate       *x509.Certificate
	rootKey, intermediateKey *ecdsa.PrivateKey
}

func caCert(cn string, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"Acme"}},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// NewPKI makes a root named cn and an intermediate under it.
func NewPKI(cn string) (*PKI, error) {
	rk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ik, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	r, err := caCert(cn+" Root CA", nil, nil, rk)
	if err != nil {
		return nil, err
	}
	i, err := caCert(cn+" Signing CA", r, rk, ik)
	if err != nil {
		return nil, err
	}
	return &PKI{Root: r, Intermediate: i, rootKey: rk, intermediateKey: ik}, nil
}

// PEM encodes certificates.
func PEM(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

// ChainPEM is what a policy trusts: the intermediate and the root.
func (p *PKI) ChainPEM() string { return PEM(p.Intermediate, p.Root) }

// CertSigner is a signing key and the certificate the PKI's intermediate issued for it.
type CertSigner struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pki  *PKI
}

// Issue issues a certificate for san (an email address when it has an @, else a URI), valid
// from notBefore to notAfter, for code signing, or for TLS servers when codeSigning is false.
func (p *PKI) Issue(san string, notBefore, notAfter time.Time, codeSigning bool) (*CertSigner, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: san},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if codeSigning {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	}
	if strings.Contains(san, "@") {
		tmpl.EmailAddresses = []string{san}
	} else {
		u, err := url.Parse(san)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Intermediate, &key.PublicKey, p.intermediateKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CertSigner{Cert: cert, key: key, pki: p}, nil
}

// SignLegacy signs the image at digest in cosign's .sig tag with the certificate, and the
// chain (intermediate and root) in the annotation when withChain. No transparency log entry.
func (s *CertSigner) SignLegacy(digest name.Digest, withChain bool, c ...Credentials) error {
	var chain []byte
	if withChain {
		chain = []byte(s.pki.ChainPEM())
	}
	return (&Key{priv: s.key}).signLegacy(digest, digest, credentials(c), static.WithCertChain([]byte(PEM(s.Cert)), chain))
}

func (s *CertSigner) envelope(statement []byte) (*dsse.Envelope, []byte, error) {
	sv, err := signature.LoadECDSASignerVerifier(s.key, crypto.SHA256)
	if err != nil {
		return nil, nil, err
	}
	es, err := dsse.NewEnvelopeSigner(&sigdsse.SignerAdapter{SignatureSigner: sv, Pub: &s.key.PublicKey})
	if err != nil {
		return nil, nil, err
	}
	env, err := es.SignPayload(context.Background(), "application/vnd.in-toto+json", statement)
	if err != nil {
		return nil, nil, err
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	return env, sig, err
}

// SignBundle signs statement with the certificate in a sigstore bundle, stored as a referrer
// of the image at digest. No transparency log entry.
func (s *CertSigner) SignBundle(digest name.Digest, statement []byte, c ...Credentials) error {
	_, sig, err := s.envelope(statement)
	if err != nil {
		return err
	}
	b := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: s.Cert.Raw}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: statement, PayloadType: "application/vnd.in-toto+json", Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	return writeBundle(digest, b, statement, credentials(c))
}

// SignBundleLogged is SignBundle with an entry in the Sigstore's transparency log,
// integrated at the given time.
func (sg *Sigstore) SignBundleLogged(s *CertSigner, digest name.Digest, statement []byte, integrated time.Time) error {
	env, sig, err := s.envelope(statement)
	if err != nil {
		return err
	}
	entry, err := sg.GenerateTlogEntry(s.Cert, env, sig, integrated.Unix(), true)
	if err != nil {
		return err
	}
	return sg.writeSigned(digest, statement, s.Cert, env, []*tlog.Entry{entry})
}
