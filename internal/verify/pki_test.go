package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

func certSigner(name, chain string, ids ...v1alpha1.CertificateIdentity) v1alpha1.Signer {
	return v1alpha1.Signer{Name: name, Certificate: v1alpha1.CertificateSigner{CertificateChain: chain, Identities: ids}}
}

func TestCertificateSigners(t *testing.T) {
	f := newKeylessFixture(t)
	corp, err := registrytest.NewPKI("Corp")
	if err != nil {
		t.Fatal(err)
	}
	other, err := registrytest.NewPKI("Other")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	issue := func(p *registrytest.PKI, san string, from, to time.Time, codeSigning bool) *registrytest.CertSigner {
		t.Helper()
		s, err := p.Issue(san, from, to, codeSigning)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	release := issue(corp, "release@acme.example", now.Add(-time.Hour), now.Add(time.Hour), true)
	ci := issue(corp, "https://ci.acme.example/pipelines/release", now.Add(-time.Hour), now.Add(time.Hour), true)
	intern := issue(corp, "intern@acme.example", now.Add(-time.Hour), now.Add(time.Hour), true)
	expired := issue(corp, "release@acme.example", now.Add(-3*time.Hour), now.Add(-time.Hour), true)
	// Valid for half an hour, ended twenty minutes ago (the log's key is valid from an hour ago).
	lapsed := issue(corp, "release@acme.example", now.Add(-50*time.Minute), now.Add(-20*time.Minute), true)
	tls := issue(corp, "release@acme.example", now.Add(-time.Hour), now.Add(time.Hour), false)
	foreign := issue(other, "release@acme.example", now.Add(-time.Hour), now.Add(time.Hour), true)

	image := func(tag string, sign func(d name.Digest) error) name.Digest {
		t.Helper()
		d := mustPush(t, f.reg, "acme/pki", tag)
		if err := sign(d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	stmt := func(d name.Digest) []byte { return registrytest.Statement(d, ctypes.CosignSignPredicateType) }
	legacyChain := image("legacy-chain", func(d name.Digest) error { return release.SignLegacy(d, true) })
	legacyBare := image("legacy-bare", func(d name.Digest) error { return release.SignLegacy(d, false) })
	bundle := image("bundle", func(d name.Digest) error { return release.SignBundle(d, stmt(d)) })
	byCI := image("ci", func(d name.Digest) error { return ci.SignBundle(d, stmt(d)) })
	byIntern := image("intern", func(d name.Digest) error { return intern.SignBundle(d, stmt(d)) })
	byExpired := image("expired", func(d name.Digest) error { return expired.SignBundle(d, stmt(d)) })
	byExpiredLegacy := image("expired-legacy", func(d name.Digest) error { return expired.SignLegacy(d, true) })
	// Expired now, but logged while it was valid: the log's time is the signing time.
	loggedInTime := image("logged", func(d name.Digest) error { return f.ss.SignBundleLogged(lapsed, d, stmt(d), now.Add(-40*time.Minute)) })
	loggedLate := image("logged-late", func(d name.Digest) error { return f.ss.SignBundleLogged(lapsed, d, stmt(d), now.Add(-10*time.Minute)) })
	byTLS := image("tls", func(d name.Digest) error { return tls.SignBundle(d, stmt(d)) })
	byForeign := image("foreign", func(d name.Digest) error { return foreign.SignBundle(d, stmt(d)) })
	byForeignLegacy := image("foreign-legacy", func(d name.Digest) error { return foreign.SignLegacy(d, true) })
	byFulcio := image("fulcio", func(d name.Digest) error {
		return f.ss.SignBundle(d, stmt(d), "release@acme.example", "https://accounts.example.com")
	})

	email := v1alpha1.CertificateIdentity{Subject: "release@acme.example"}
	ciRE := v1alpha1.CertificateIdentity{SubjectRegExp: `https://ci\.acme\.example/pipelines/.*`}
	rootOnly := registrytest.PEM(corp.Root)
	for _, c := range []struct {
		name  string
		chain string
		tlog  bool
		image name.Digest
		want  string // "" admitted
	}{
		{"legacy signature with its chain, policy trusts the root only", rootOnly, false, legacyChain, ""},
		{"legacy signature without a chain, policy lists the intermediate", corp.ChainPEM(), false, legacyBare, ""},
		{"legacy signature without a chain, and no intermediate anywhere", rootOnly, false, legacyBare, `no signature by a trusted signer (tried: certificate "corp"`},
		{"bundle", corp.ChainPEM(), false, bundle, ""},
		{"a URI subject alternative name by regular expression", corp.ChainPEM(), false, byCI, ""},
		{"another name of the same CA", corp.ChainPEM(), false, byIntern, `the certificate's subject alternative names (intern@acme.example) match none of the signer's identities`},
		{"an expired certificate and no log: checked now", corp.ChainPEM(), false, byExpired, `certificate has expired`},
		{"an expired certificate in the legacy format", corp.ChainPEM(), false, byExpiredLegacy, `expired`},
		{"logged while the certificate was valid", corp.ChainPEM(), true, loggedInTime, ""},
		{"logged after the certificate expired", corp.ChainPEM(), true, loggedLate, `integrated time outside certificate validity`},
		{"a certificate not for code signing", corp.ChainPEM(), false, byTLS, `incompatible key usage`},
		{"another CA, same name", corp.ChainPEM(), false, byForeign, `no signature by a trusted signer`},
		{"another CA, with its own chain attached", corp.ChainPEM(), false, byForeignLegacy, `no signature by a trusted signer`},
		{"a Fulcio certificate with the same name", corp.ChainPEM(), false, byFulcio, `no signature by a trusted signer`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{certSigner("corp", c.chain, email, ciRE)}, TransparencyLog: v1alpha1.TransparencyLogSkip}
			if c.tlog {
				rules.TransparencyLog = v1alpha1.TransparencyLogRequired
			}
			expectVerdict(t, f.verdict(t, rules, c.image), c.want)
		})
	}
	t.Run("a keyless signer does not trust the private CA", func(t *testing.T) {
		rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keyless("k", v1alpha1.Identity{IssuerRegExp: ".*", Subject: "release@acme.example"})}, TransparencyLog: v1alpha1.TransparencyLogSkip}
		expectVerdict(t, f.verdict(t, rules, bundle), `no signature by a trusted signer (tried: keyless "k"`)
	})
	t.Run("from a ConfigMap, beside a key signer", func(t *testing.T) {
		f.src.configMaps["corp-ca"] = &corev1.ConfigMap{Data: map[string]string{"ca.crt": corp.ChainPEM()}}
		key, _ := registrytest.NewKey()
		rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{
			keySigner("release-key", key.PublicKeyPEM()),
			{Name: "corp", Certificate: v1alpha1.CertificateSigner{ConfigMapRef: v1alpha1.CertificateConfigMapReference{Name: "corp-ca"}, Identities: []v1alpha1.CertificateIdentity{email}}},
		}, TransparencyLog: v1alpha1.TransparencyLogSkip}
		expectVerdict(t, f.verdict(t, rules, bundle), "")
		expectVerdict(t, f.verdict(t, rules, byIntern), `tried: key "release-key", certificate "corp"`)
	})
}

func TestCertificateSignerErrors(t *testing.T) {
	corp, err := registrytest.NewPKI("Corp")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := corp.Issue("release@acme.example", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	src := &sources{configMaps: map[string]*corev1.ConfigMap{"corp-ca": {Data: map[string]string{"bundle.pem": corp.ChainPEM()}}}}
	id := []v1alpha1.CertificateIdentity{{Subject: "release@acme.example"}}
	for _, c := range []struct {
		signer v1alpha1.CertificateSigner
		want   string
	}{
		{v1alpha1.CertificateSigner{CertificateChain: registrytest.PEM(corp.Intermediate), Identities: id}, "no root: none of the 1 certificates is self-signed"},
		{v1alpha1.CertificateSigner{CertificateChain: corp.ChainPEM() + registrytest.PEM(leaf.Cert), Identities: id}, `certificate 3 (subject "CN=release@acme.example") is not a CA certificate`},
		{v1alpha1.CertificateSigner{CertificateChain: corp.ChainPEM() + "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", Identities: id}, `certificate 3: a PEM "EC PRIVATE KEY" block, not a CERTIFICATE`},
		{v1alpha1.CertificateSigner{CertificateChain: "not PEM", Identities: id}, "certificate 1: not PEM"},
		{v1alpha1.CertificateSigner{CertificateChain: corp.ChainPEM() + "trailing text", Identities: id}, "certificate 3: not PEM"},
		{v1alpha1.CertificateSigner{CertificateChain: strings.Repeat(registrytest.PEM(corp.Root), 65), Identities: id}, "more than 64 certificates"},
		{v1alpha1.CertificateSigner{ConfigMapRef: v1alpha1.CertificateConfigMapReference{Name: "missing"}, Identities: id}, `certificate.configMapRef: ConfigMap "missing": not found`},
		{v1alpha1.CertificateSigner{ConfigMapRef: v1alpha1.CertificateConfigMapReference{Name: "corp-ca"}, Identities: id}, `certificate.configMapRef: ConfigMap "corp-ca" has no key "ca.crt"`},
		{v1alpha1.CertificateSigner{CertificateChain: corp.ChainPEM(), Identities: []v1alpha1.CertificateIdentity{{SubjectRegExp: "("}}}, `certificate.identities[0]: invalid regular expression "("`},
	} {
		rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "corp", Certificate: c.signer}}, TransparencyLog: v1alpha1.TransparencyLogSkip}
		snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("broken", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
		if got := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "broken"}); !strings.Contains(got, c.want) {
			t.Errorf("PolicyError = %q, want it to say %q", got, c.want)
		}
	}
	good := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "corp", Certificate: v1alpha1.CertificateSigner{
		ConfigMapRef: v1alpha1.CertificateConfigMapReference{Name: "corp-ca", Key: "bundle.pem"}, Identities: id}}}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("good", good)}, nil, policy.Options{Trust: verify.Compiler(src)})
	if got := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "good"}); got != "" {
		t.Errorf("a valid certificate signer: %s", got)
	}
}
