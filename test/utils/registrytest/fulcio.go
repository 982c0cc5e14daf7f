package registrytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
)

// fulcio is a second Fulcio CA of a Sigstore, whose leaf certificates carry the extensions
// Fulcio writes from a CI token's claims (VirtualSigstore's carry only the issuer).
type fulcio struct {
	root, intermediate *x509.Certificate
	key                *ecdsa.PrivateKey
}

func newFulcio() (*fulcio, error) {
	rootCert, rootKey, err := ca.GenerateRootCa()
	if err != nil {
		return nil, err
	}
	inter, key, err := ca.GenerateFulcioIntermediate(rootCert, rootKey)
	if err != nil {
		return nil, err
	}
	return &fulcio{root: rootCert, intermediate: inter, key: key}, nil
}

func (f *fulcio) authority() root.CertificateAuthority {
	return &root.FulcioCertificateAuthority{Root: f.root, Intermediates: []*x509.Certificate{f.intermediate}, URI: "https://fulcio.test"}
}

// Extension OIDs as Fulcio writes them: the issuer (v2) and 1.3.6.1.4.1.57264.1.9 to .22 as
// DER UTF8Strings; the older GitHub ones (.1 to .6) as raw bytes.
func extensionsOf(issuer string, e certificate.Extensions) ([]pkix.Extension, error) {
	oid := func(n int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, n} }
	out := []pkix.Extension{{Id: oid(1), Value: []byte(issuer)}}
	for n, v := range map[int]string{2: e.GithubWorkflowTrigger, 3: e.GithubWorkflowSHA, 4: e.GithubWorkflowName, 5: e.GithubWorkflowRepository, 6: e.GithubWorkflowRef} {
		if v != "" {
			out = append(out, pkix.Extension{Id: oid(n), Value: []byte(v)})
		}
	}
	for n, v := range map[int]string{
		8: issuer, 9: e.BuildSignerURI, 10: e.BuildSignerDigest, 11: e.RunnerEnvironment, 12: e.SourceRepositoryURI,
		13: e.SourceRepositoryDigest, 14: e.SourceRepositoryRef, 15: e.SourceRepositoryIdentifier, 16: e.SourceRepositoryOwnerURI,
		17: e.SourceRepositoryOwnerIdentifier, 18: e.BuildConfigURI, 19: e.BuildConfigDigest, 20: e.BuildTrigger, 21: e.RunInvocationURI,
		22: e.SourceRepositoryVisibilityAtSigning,
	} {
		if v == "" {
			continue
		}
		der, err := asn1.MarshalWithParams(v, "utf8")
		if err != nil {
			return nil, err
		}
		out = append(out, pkix.Extension{Id: oid(n), Value: der})
	}
	return out, nil
}

// GitHubExtensions are the extensions Fulcio writes for a GitHub Actions run of workflow
// (.github/workflows/release.yml) in repository (acme/app) at ref, for event, at sha, on a
// github-hosted runner: the current ones and the older GitHub ones.
func GitHubExtensions(repository, workflow, ref, event, sha string) certificate.Extensions {
	repoURI := "https://github.com/" + repository
	owner, _, _ := strings.Cut(repository, "/")
	return certificate.Extensions{
		GithubWorkflowTrigger: event, GithubWorkflowSHA: sha, GithubWorkflowName: "release",
		GithubWorkflowRepository: repository, GithubWorkflowRef: ref,
		BuildSignerURI: repoURI + "/" + workflow + "@" + ref, BuildSignerDigest: sha, RunnerEnvironment: "github-hosted",
		SourceRepositoryURI: repoURI, SourceRepositoryDigest: sha, SourceRepositoryRef: ref,
		SourceRepositoryIdentifier: fmt.Sprint(fnv32(repository)), SourceRepositoryOwnerURI: "https://github.com/" + owner,
		SourceRepositoryOwnerIdentifier: "654321", BuildConfigURI: repoURI + "/" + workflow + "@" + ref, BuildConfigDigest: sha,
		BuildTrigger: event, RunInvocationURI: repoURI + "/actions/runs/1/attempts/1", SourceRepositoryVisibilityAtSigning: "public",
	}
}

// SignBundleWithExtensions signs the image at digest keylessly as SignBundle does, with a
// certificate for subject (a URI SAN, as GitHub's are) and issuer that carries ext.
func (s *Sigstore) SignBundleWithExtensions(digest name.Digest, statement []byte, subject, issuer string, ext certificate.Extensions) error {
	san, err := url.Parse(subject)
	if err != nil {
		return err
	}
	extensions, err := extensionsOf(issuer, ext)
	if err != nil {
		return err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), URIs: []*url.URL{san},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: extensions,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.fulcio.intermediate, &priv.PublicKey, s.fulcio.key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	signer, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return err
	}
	es, err := dsse.NewEnvelopeSigner(&sigdsse.SignerAdapter{SignatureSigner: signer, Pub: &priv.PublicKey})
	if err != nil {
		return err
	}
	env, err := es.SignPayload(context.Background(), "application/vnd.in-toto+json", statement)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return err
	}
	entry, err := s.GenerateTlogEntry(cert, env, sig, now.Unix(), true)
	if err != nil {
		return err
	}
	return s.writeSigned(digest, statement, cert, env, []*tlog.Entry{entry})
}

// fnv32 makes a repository's numeric identifier from its name, so that forks differ.
func fnv32(s string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()
}
