package verify

// Certificate signers: signatures made with certificates of a private certificate authority,
// checked against its roots (not Fulcio's) and matched on their subject alternative names.

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sigstore/cosign/v3/pkg/cosign"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/text"
)

// Bounds on the certificates of a certificate signer: what a policy or ConfigMap holds, and
// what a signature may add.
const (
	maxCACertificates         = 64
	maxCertificatePEM         = 256 << 10
	maxSignatureIntermediates = 8
)

// anyCertificate is the identity cosign and sigstore-go are given for a certificate signer:
// they check the chain and the signature, and imagegate matches the names itself (a private
// CA's certificates carry no OIDC issuer, which sigstore-go's identities require).
var anyCertificate = []cosign.Identity{{IssuerRegExp: ".*", SubjectRegExp: ".*"}}

// pkiMaterial is a verify section's trusted root with the certificate authorities replaced by
// a private CA's: transparency logs and timestamp authorities still come from the trusted
// root, but only the private roots vouch for signing certificates.
type pkiMaterial struct {
	root.TrustedMaterial
	cas []root.CertificateAuthority
}

func (m *pkiMaterial) FulcioCertificateAuthorities() []root.CertificateAuthority { return m.cas }

// CTLogs: a private CA writes no certificate transparency log.
func (m *pkiMaterial) CTLogs() map[string]*root.TransparencyLog { return nil }

// withIntermediates adds the intermediates a signature carries. They are not trusted for
// themselves: a chain must still end at one of the roots.
func (m *pkiMaterial) withIntermediates(extra []*x509.Certificate) *pkiMaterial {
	if len(extra) == 0 {
		return m
	}
	out := &pkiMaterial{TrustedMaterial: m.TrustedMaterial}
	for _, ca := range m.cas {
		fca := *ca.(*root.FulcioCertificateAuthority)
		fca.Intermediates = append(append([]*x509.Certificate{}, fca.Intermediates...), extra...)
		out.cas = append(out.cas, &fca)
	}
	return out
}

// sanRule is a certificate signer's identities: any subject alternative name (email or URI)
// matching any one of them accepts the certificate.
type sanRule struct {
	exact []string
	re    []*regexp.Regexp
}

func (r *sanRule) check(cert *x509.Certificate) error {
	names := make([]string, 0, len(cert.EmailAddresses)+len(cert.URIs))
	names = append(names, cert.EmailAddresses...)
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	for _, n := range names {
		for _, e := range r.exact {
			if n == e {
				return nil
			}
		}
		for _, re := range r.re {
			if re.MatchString(n) {
				return nil
			}
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("the certificate (subject %q) has no email or URI subject alternative name", text.Cut(cert.Subject.String(), 256))
	}
	return fmt.Errorf("the certificate's subject alternative names (%s) match none of the signer's identities", text.Cut(strings.Join(names, ", "), 256))
}

// compileCertificateSigner reads a certificate signer's CA certificates (inline or from the
// ConfigMap) and identities. base is the verify section's trusted root.
func compileCertificateSigner(src Sources, c *v1alpha1.CertificateSigner, base root.TrustedMaterial) (*pkiMaterial, *sanRule, []byte, error) {
	data := []byte(c.CertificateChain)
	if ref := c.ConfigMapRef; ref.Name != "" {
		s, err := configMapKey(src, "certificate.configMapRef", ref.Name, or(ref.Key, "ca.crt"))
		if err != nil {
			return nil, nil, nil, err
		}
		data = []byte(s)
	}
	roots, intermediates, err := parseCACertificates(data)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certificate: %w", err)
	}
	m := &pkiMaterial{TrustedMaterial: base}
	for _, r := range roots {
		m.cas = append(m.cas, &root.FulcioCertificateAuthority{Root: r, Intermediates: intermediates})
	}
	rule := &sanRule{}
	for j, id := range c.Identities {
		switch {
		case id.Subject != "" && id.SubjectRegExp != "":
			return nil, nil, nil, fmt.Errorf("certificate.identities[%d]: set one of subject and subjectRegExp", j)
		case id.Subject != "":
			rule.exact = append(rule.exact, id.Subject)
		case id.SubjectRegExp != "":
			re, err := regexp.Compile(anchored(id.SubjectRegExp))
			if err != nil {
				return nil, nil, nil, fmt.Errorf("certificate.identities[%d]: invalid regular expression %q: %w", j, id.SubjectRegExp, err)
			}
			rule.re = append(rule.re, re)
		default:
			return nil, nil, nil, fmt.Errorf("certificate.identities[%d]: set subject or subjectRegExp", j)
		}
	}
	if len(c.Identities) == 0 {
		return nil, nil, nil, fmt.Errorf("certificate: at least one identity is required")
	}
	return m, rule, data, nil
}

// parseCACertificates reads PEM CA certificates: the self-signed ones are the roots, the
// others intermediates. Anything else in the PEM (a key, a leaf certificate, text that is not
// PEM) is refused, naming it: a bundle that says more than it should is a mistake to show.
func parseCACertificates(data []byte) (roots, intermediates []*x509.Certificate, err error) {
	blocks, err := pemBlocks(data, "CERTIFICATE", "certificate", maxCACertificates)
	if err != nil {
		return nil, nil, err
	}
	for i, der := range blocks {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d does not parse: %w", i+1, err)
		}
		if !cert.BasicConstraintsValid || !cert.IsCA {
			return nil, nil, fmt.Errorf("certificate %d (subject %q) is not a CA certificate: list the roots and intermediates, not the signing certificate", i+1, text.Cut(cert.Subject.String(), 256))
		}
		if selfSigned(cert) {
			roots = append(roots, cert)
		} else {
			intermediates = append(intermediates, cert)
		}
	}
	if len(roots) == 0 {
		return nil, nil, fmt.Errorf("no root: none of the %d certificates is self-signed", len(intermediates))
	}
	return roots, intermediates, nil
}

// pemBlocks reads the PEM blocks of data, each of type typ (what names one in errors), at
// most maxBlocks of them and maxCertificatePEM bytes in all. Anything else (text that is not
// PEM, a block of another type) is refused, naming it: a bundle that says more than it should
// is a mistake to show.
func pemBlocks(data []byte, typ, what string, maxBlocks int) ([][]byte, error) {
	if len(data) > maxCertificatePEM {
		return nil, fmt.Errorf("the %ss are %d bytes, more than the %d imagegate reads", what, len(data), maxCertificatePEM)
	}
	var out [][]byte
	rest := bytes.TrimSpace(data)
	for n := 1; len(rest) > 0; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%s %d: not PEM (expected -----BEGIN %s-----)", what, n, typ)
		}
		rest = bytes.TrimSpace(rest)
		if b.Type != typ {
			article := "a"
			if strings.ContainsRune("AEIOUX", rune(typ[0])) {
				article = "an" // an X509 CRL
			}
			return nil, fmt.Errorf("%s %d: a PEM %q block, not %s %s", what, n, text.Cut(b.Type, 64), article, typ)
		}
		if n > maxBlocks {
			return nil, fmt.Errorf("more than %d %ss", maxBlocks, what)
		}
		out = append(out, b.Bytes)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s", what)
	}
	return out, nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// signatureIntermediates picks the CA certificates of a signature's chain (cosign's
// certificate-chain annotation): every certificate but the self-signed ones, at most
// maxSignatureIntermediates.
func signatureIntermediates(chain []*x509.Certificate) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, c := range chain {
		if selfSigned(c) {
			continue
		}
		out = append(out, c)
	}
	if len(out) > maxSignatureIntermediates {
		return nil, fmt.Errorf("the signature's certificate chain has %d intermediates, more than the %d imagegate reads", len(out), maxSignatureIntermediates)
	}
	return out, nil
}

// errLeafUnverified is how sigstore-go says a certificate does not chain to a trusted root,
// without saying why.
const errLeafUnverified = "leaf certificate verification failed"

// explain replaces sigstore-go's "leaf certificate verification failed" with why the
// certificate does not chain to the signer's roots at the time it was checked at (now
// without a transparency log, else when it was issued: the log's time is checked apart).
// Each root is tried as sigstore-go tries it; the first one's reason is said, unless one
// verifies (then the failure was another, and err stays).
func (m *pkiMaterial) explain(err error, cert *x509.Certificate, tlog bool) error {
	if err == nil || cert == nil || !strings.Contains(err.Error(), errLeafUnverified) {
		return err
	}
	at := time.Now()
	if tlog {
		at = cert.NotBefore
	}
	var first error
	for _, ca := range m.cas {
		_, verr := ca.Verify(cert, at)
		if verr == nil {
			return err
		}
		if first == nil {
			first = verr
		}
	}
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(first, &unknown):
		return fmt.Errorf("the certificate does not chain to the signer's roots (an intermediate missing from certificateChain and from the signature's chain, or another CA): %w", first)
	case first != nil:
		return fmt.Errorf("the certificate does not chain to the signer's roots: %w", first)
	}
	return err
}
