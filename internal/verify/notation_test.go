package verify_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// notationSigner is a signer trusting ca's root (a ca trust store named ca-name) for the
// given identities.
func notationSigner(name string, ca *notationtest.CA, ids ...string) v1alpha1.Signer {
	return v1alpha1.Signer{Name: name, Notation: v1alpha1.NotationSigner{
		TrustStores:       []v1alpha1.NotationTrustStore{{Type: v1alpha1.NotationStoreCA, Name: name + "-ca", Certificates: ca.PEM()}},
		TrustedIdentities: ids,
	}}
}

// notationVerdict compiles rules into a ClusterImagePolicy and decides image with a fresh
// verifier, failing the test when the policy does not compile.
func notationVerdict(t *testing.T, src *sources, rules *v1alpha1.VerifyRules, image name.Digest) string {
	t.Helper()
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("notation", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "notation"}); e != "" {
		t.Fatal(e)
	}
	d := decide(t, snap, verify.New(verify.Options{}), image.String())
	return messages(&d)
}

func TestNotationSignatures(t *testing.T) {
	ca, err := notationtest.NewCA("Acme Release CA")
	must(t, err)
	rogue, err := notationtest.NewCA("Acme Release CA") // same name, another key
	must(t, err)
	tsa, err := notationtest.NewTSA()
	must(t, err)
	t.Cleanup(tsa.Close)
	now := time.Now()
	release, err := ca.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	intern, err := ca.Issue("intern", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	forged, err := rogue.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	// Valid from three hours ago to an hour ago: it signed two hours ago.
	expired, err := ca.Issue("release", now.Add(-3*time.Hour), now.Add(-time.Hour))
	must(t, err)
	revoked, err := ca.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	crl, err := ca.CRL(now.Add(time.Hour), revoked.Cert)
	must(t, err)
	staleCRL, err := ca.CRL(now.Add(-time.Minute))
	must(t, err)
	identity := "x509.subject: " + notationtest.Subject("release")

	for _, referrers := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "referrers tag"}[referrers], func(t *testing.T) {
			reg := registrytest.New(referrers)
			t.Cleanup(reg.Close)
			image := func(tag string, sign func(d name.Digest) error) name.Digest {
				t.Helper()
				d := mustPush(t, reg, "acme/notation", tag)
				if sign != nil {
					must(t, sign(d))
				}
				return d
			}
			with := func(s *notationtest.Signer, o notationtest.Options) func(name.Digest) error {
				return func(d name.Digest) error { return s.Sign(d, o) }
			}
			jwsSigned := image("jws", with(release, notationtest.Options{}))
			coseSigned := image("cose", with(release, notationtest.Options{MediaType: notationtest.COSE}))
			notationCLI := image("notation-go", func(d name.Digest) error {
				return release.SignWithNotation(context.Background(), d, notationtest.JWS)
			})
			notationCLICOSE := image("notation-go-cose", func(d name.Digest) error {
				return release.SignWithNotation(context.Background(), d, notationtest.COSE)
			})
			byIntern := image("intern", with(intern, notationtest.Options{}))
			byRogue := image("rogue", with(forged, notationtest.Options{}))
			twoRogue := image("two-rogue", func(d name.Digest) error {
				if err := forged.Sign(d, notationtest.Options{}); err != nil {
					return err
				}
				return forged.Sign(d, notationtest.Options{MediaType: notationtest.COSE})
			})
			tsa.SetTime(now.Add(-2 * time.Hour))
			expiredStamped := image("expired-timestamped", with(expired, notationtest.Options{SigningTime: now.Add(-2 * time.Hour), TSA: tsa}))
			tsa.SetTime(time.Time{})
			expiredBare := image("expired", with(expired, notationtest.Options{SigningTime: now.Add(-2 * time.Hour)}))
			// Stamped now, after the certificate expired.
			expiredLate := image("expired-stamped-late", with(expired, notationtest.Options{SigningTime: now.Add(-2 * time.Hour), TSA: tsa}))
			byRevoked := image("revoked", with(revoked, notationtest.Options{}))
			sigExpired := image("signature-expired", with(release, notationtest.Options{Expiry: now.Add(-time.Minute), SigningTime: now.Add(-30 * time.Minute)}))
			other := image("other", nil)
			otherDesc, err := notationtest.Descriptor(other)
			must(t, err)
			// A signature of another image, pushed as a referrer of this one.
			ofOther := image("of-other", with(release, notationtest.Options{Target: &otherDesc}))
			unsigned := image("unsigned", nil)

			rules := func(s ...v1alpha1.Signer) *v1alpha1.VerifyRules {
				return &v1alpha1.VerifyRules{Signers: s}
			}
			tsaStore := v1alpha1.NotationTrustStore{Type: v1alpha1.NotationStoreTSA, Name: "acme-tsa", Certificates: notationtest.PEM(tsa.Root)}
			withTSA := notationSigner("acme", ca, identity)
			withTSA.Notation.TrustStores = append(withTSA.Notation.TrustStores, tsaStore)
			withCRL := notationSigner("acme", ca, identity)
			withCRL.Notation.CRLs = v1alpha1.NotationCRLReference{Name: "acme-crls"}
			withStaleCRL := notationSigner("acme", ca, identity)
			withStaleCRL.Notation.CRLs = v1alpha1.NotationCRLReference{Name: "stale-crls"}
			permissive := notationSigner("acme", ca, identity)
			permissive.Notation.SignatureVerification.Level = v1alpha1.NotationPermissive
			audit := notationSigner("acme", ca, identity)
			audit.Notation.SignatureVerification.Level = v1alpha1.NotationAudit
			skip := v1alpha1.Signer{Name: "acme", Notation: v1alpha1.NotationSigner{SignatureVerification: v1alpha1.NotationSignatureVerification{Level: v1alpha1.NotationSkip}}}
			key, err := registrytest.NewKey()
			must(t, err)
			src := &sources{configMaps: map[string]*corev1.ConfigMap{
				"acme-crls":  {Data: map[string]string{"crls.pem": crl}},
				"stale-crls": {Data: map[string]string{"crls.pem": staleCRL}},
			}}
			mixed := rules(keySigner("release-key", key.PublicKeyPEM()), notationSigner("acme", ca, identity))
			mixed.TransparencyLog = v1alpha1.TransparencyLogSkip
			both := rules(keySigner("release-key", key.PublicKeyPEM()), notationSigner("acme", ca, identity))
			both.TransparencyLog, both.RequiredSigners = v1alpha1.TransparencyLogSkip, 2
			bothSigned := image("both", func(d name.Digest) error {
				if err := key.Sign(d); err != nil {
					return err
				}
				return release.Sign(d, notationtest.Options{})
			})

			for _, c := range []struct {
				name  string
				rules *v1alpha1.VerifyRules
				image name.Digest
				want  string // "" admitted
			}{
				{"JWS envelope", rules(notationSigner("acme", ca, identity)), jwsSigned, ""},
				{"COSE envelope", rules(notationSigner("acme", ca, identity)), coseSigned, ""},
				{"signed by notation-go's own signer and repository (JWS)", rules(notationSigner("acme", ca, identity)), notationCLI, ""},
				{"signed by notation-go's own signer and repository (COSE)", rules(notationSigner("acme", ca, identity)), notationCLICOSE, ""},
				{"any identity of the trust store", rules(notationSigner("acme", ca, "*")), byIntern, ""},
				{"another identity of the same CA", rules(notationSigner("acme", ca, identity)), byIntern,
					`no signature by a trusted signer (tried: notation "acme" (1 Notary signature found: signing certificate "CN=intern,O=Acme,L=Seattle,ST=WA,C=US" is not one of the trusted identities))`},
				{"a CA not in the trust store, same names", rules(notationSigner("acme", ca, identity)), byRogue,
					`(1 Notary signature found: certificate chain not trusted by trust store "acme-ca"`},
				{"two signatures by an untrusted CA", rules(notationSigner("acme", ca, identity)), twoRogue,
					`tried: notation "acme" (2 Notary signatures found: certificate chain not trusted by trust store "acme-ca"`},
				{"expired certificate, timestamped while valid", rules(withTSA), expiredStamped, ""},
				{"expired certificate, timestamped but no tsa trust store", rules(notationSigner("acme", ca, identity)), expiredStamped, `(the signer has no tsa trust store, so a timestamp countersignature is not read)`},
				{"expired certificate without a timestamp", rules(withTSA), expiredBare, `has expired, and the signature has no timestamp countersignature to show it was valid when it signed`},
				{"expired certificate, timestamped after it expired", rules(withTSA), expiredLate, `(1 Notary signature found:`},
				{"expired certificate, permissive level logs the expiry", rules(permissive), expiredBare, ""},
				{"revoked in the configured CRL", rules(withCRL), byRevoked, `revoked`},
				{"not revoked in the configured CRL", rules(withCRL), jwsSigned, ""},
				{"revoked, but no CRL configured", rules(notationSigner("acme", ca, identity)), byRevoked, ""},
				{"a CRL past its next update", rules(withStaleCRL), jwsSigned, `revocation status is unknown`},
				{"the signature's own expiry has passed", rules(notationSigner("acme", ca, identity)), sigExpired, `digital signature has expired`},
				{"a signature of another image", rules(notationSigner("acme", ca, identity)), ofOther, `the signature is of another artifact`},
				{"unsigned", rules(notationSigner("acme", ca, identity)), unsigned, `no signature by a trusted signer (tried: notation "acme" (no Notary signature found among the referrers))`},
				{"audit level: an intact signature by an untrusted CA counts", rules(audit), byRogue, ""},
				{"audit level: no signature at all is still refused", rules(audit), unsigned, `no Notary signature found`},
				{"skip level: no signature is read", rules(skip), unsigned, ""},
				{"a key signer and a notation signer: the Notary signature suffices", mixed, jwsSigned, ""},
				{"requiredSigners 2: a cosign signature and a Notary signature", both, bothSigned, ""},
				{"requiredSigners 2: the Notary signature alone", both, jwsSigned, `signatures by 2 different trusted signers are required, 1 verified: notation "acme" (missing: key "release-key"`},
				{"a key signer and a notation signer: both tried", mixed, unsigned, `tried: key "release-key", notation "acme" (no Notary signature found among the referrers); found no signature`},
			} {
				t.Run(c.name, func(t *testing.T) {
					expectVerdict(t, notationVerdict(t, src, c.rules, c.image), c.want)
				})
			}
		})
	}
}

// TestNotationAWSSigner verifies signatures as AWS Signer writes them (the signingAuthority
// scheme, its plugin required by a critical attribute, the signing profile version signed)
// without running its plugin: the profile ARN is matched in process.
func TestNotationAWSSigner(t *testing.T) {
	reg := registrytest.New(true)
	t.Cleanup(reg.Close)
	ca, err := notationtest.NewCA("AWS Signer Code Signing Root")
	must(t, err)
	now := time.Now()
	s, err := ca.Issue("AWS Signer", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	const profile = "arn:aws:signer:us-west-2:123456789012:/signing-profiles/release"
	attrs := func(version string) map[string]string {
		return map[string]string{
			"io.cncf.notary.verificationPlugin":          "com.amazonaws.signer.notation.plugin",
			"com.amazonaws.signer.signingProfileVersion": version,
			"com.amazonaws.signer.signingJob":            "arn:aws:signer:us-west-2:123456789012:/signing-jobs/0b1c",
		}
	}
	signed := mustPush(t, reg, "acme/aws", "release")
	must(t, s.Sign(signed, notationtest.Options{SigningAuthority: true, Attributes: attrs(profile + "/AbCdEf1234")}))
	otherProfile := mustPush(t, reg, "acme/aws", "other")
	must(t, s.Sign(otherProfile, notationtest.Options{SigningAuthority: true, Attributes: attrs("arn:aws:signer:us-west-2:123456789012:/signing-profiles/dev/ZyXw987654")}))
	otherPlugin := mustPush(t, reg, "acme/aws", "plugin")
	a := attrs(profile + "/AbCdEf1234")
	a["io.cncf.notary.verificationPlugin"] = "io.example.plugin"
	must(t, s.Sign(otherPlugin, notationtest.Options{SigningAuthority: true, Attributes: a}))

	signer := func(ids ...string) *v1alpha1.VerifyRules {
		return &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "aws-signer", Notation: v1alpha1.NotationSigner{
			TrustStores:       []v1alpha1.NotationTrustStore{{Type: v1alpha1.NotationStoreSigningAuthority, Name: "aws-signer-ts", Certificates: ca.PEM()}},
			TrustedIdentities: ids,
		}}}}
	}
	for _, c := range []struct {
		name  string
		rules *v1alpha1.VerifyRules
		image name.Digest
		want  string
	}{
		{"the signing profile", signer(profile), signed, ""},
		{"the signing profile version", signer(profile + "/AbCdEf1234"), signed, ""},
		{"another version of the profile", signer(profile + "/Other00000"), signed, `is not among the trusted identities`},
		{"another profile", signer(profile), otherProfile, `signing profile version arn:aws:signer:us-west-2:123456789012:/signing-profiles/dev/ZyXw987654 is not among the trusted identities`},
		{"a plugin imagegate does not have", signer(profile), otherPlugin, `imagegate runs no Notation plugins, and the signature requires the plugin "io.example.plugin"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectVerdict(t, notationVerdict(t, &sources{}, c.rules, c.image), c.want)
		})
	}
}

func TestNotationSignerErrors(t *testing.T) {
	ca, err := notationtest.NewCA("Acme")
	must(t, err)
	now := time.Now()
	leaf, err := ca.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	src := &sources{configMaps: map[string]*corev1.ConfigMap{"bad-crl": {Data: map[string]string{"crls.pem": ca.PEM()}}}}
	store := func(typ v1alpha1.NotationTrustStoreType, pem string) v1alpha1.NotationTrustStore {
		return v1alpha1.NotationTrustStore{Type: typ, Name: "s", Certificates: pem}
	}
	for _, c := range []struct {
		name string
		n    v1alpha1.NotationSigner
		want string
	}{
		{"not PEM", v1alpha1.NotationSigner{TrustStores: []v1alpha1.NotationTrustStore{store("ca", "hello")}, TrustedIdentities: []string{"*"}}, `notation.trustStores[0] ca:s: certificate 1: not PEM`},
		{"a signing certificate in a trust store", v1alpha1.NotationSigner{TrustStores: []v1alpha1.NotationTrustStore{store("ca", notationtest.PEM(leaf.Cert))}, TrustedIdentities: []string{"*"}}, `is not a CA certificate or self-signed signing certificate`},
		{"a tsa store with an issued certificate", v1alpha1.NotationSigner{TrustStores: []v1alpha1.NotationTrustStore{store("ca", ca.PEM()), store("tsa", notationtest.PEM(leaf.Cert))}, TrustedIdentities: []string{"*"}}, `is not a root`},
		{"a malformed identity", v1alpha1.NotationSigner{TrustStores: []v1alpha1.NotationTrustStore{store("ca", ca.PEM())}, TrustedIdentities: []string{"x509.subject: nonsense"}}, `x509.subject`},
		{"a missing ConfigMap", v1alpha1.NotationSigner{TrustStores: []v1alpha1.NotationTrustStore{{Type: "ca", Name: "s", ConfigMapRef: v1alpha1.CertificateConfigMapReference{Name: "absent"}}}, TrustedIdentities: []string{"*"}}, `ConfigMap "absent"`},
		{"a certificate where the CRLs go", v1alpha1.NotationSigner{TrustStores: []v1alpha1.NotationTrustStore{store("ca", ca.PEM())}, TrustedIdentities: []string{"*"}, CRLs: v1alpha1.NotationCRLReference{Name: "bad-crl"}}, `CRL 1: a PEM "CERTIFICATE" block, not an X509 CRL`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "n", Notation: c.n}}}
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("p", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
			got := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "p"})
			t.Logf("error: %s", got)
			if !strings.Contains(got, c.want) {
				t.Errorf("got %q, want it to say %q", got, c.want)
			}
		})
	}
	t.Run("attestations name a notation signer", func(t *testing.T) {
		rules := &v1alpha1.VerifyRules{
			Signers:      []v1alpha1.Signer{notationSigner("n", ca, "*")},
			Attestations: []v1alpha1.AttestationRule{{Name: "sbom", PredicateType: "https://spdx.dev/Document"}},
		}
		snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("p", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
		if got := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "p"}); !strings.Contains(got, "every signer is a notation signer") {
			t.Errorf("got %q", got)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNotationHostileRegistry: whoever can push to the repository can add referrers with the
// Notary artifact type; none of them is read past its bounds, and none admits.
func TestNotationHostileRegistry(t *testing.T) {
	reg := registrytest.New(true)
	t.Cleanup(reg.Close)
	ca, err := notationtest.NewCA("Acme")
	must(t, err)
	now := time.Now()
	release, err := ca.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{notationSigner("acme", ca, "*")}}
	push := func(tag string, fn func(d name.Digest) error) name.Digest {
		t.Helper()
		d := mustPush(t, reg, "acme/hostile", tag)
		must(t, fn(d))
		return d
	}
	referrer := func(layerType string, layer []byte) func(d name.Digest) error {
		return func(d name.Digest) error {
			return registrytest.PushReferrer(d, notationtest.ArtifactType, layerType, layer, nil)
		}
	}
	key, err := registrytest.NewKey()
	must(t, err)
	keyRules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	for _, c := range []struct {
		name  string
		image name.Digest
		want  string
	}{
		{"an envelope that is not one", push("garbage", referrer(notationtest.JWS, []byte(`{"payload":"x"}`))), `(1 Notary signature found:`},
		{"a layer of another media type", push("json", referrer("application/json", []byte(`{}`))), `the signature envelope's media type is "application/json", neither application/jose+json nor application/cose`},
		{"an envelope past the bound", push("huge", referrer(notationtest.JWS, bytes.Repeat([]byte("a"), 300<<10))), `the signature envelope is 307200 bytes, more than the 262144 imagegate reads`},
		{"more candidates than are verified", push("many", func(d name.Digest) error {
			for i := range 65 {
				if err := registrytest.PushReferrer(d, notationtest.ArtifactType, notationtest.JWS, fmt.Appendf(nil, `{"n":%d}`, i), nil); err != nil {
					return err
				}
			}
			return release.Sign(d, notationtest.Options{})
		}), `the image has 66 Notary signatures among its referrers, more than the 64 imagegate verifies`},
		{"a good signature after a broken one", push("after", func(d name.Digest) error {
			if err := referrer(notationtest.JWS, []byte(`{}`))(d); err != nil {
				return err
			}
			return release.Sign(d, notationtest.Options{})
		}), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectVerdict(t, notationVerdict(t, &sources{}, rules, c.image), c.want)
		})
	}
	t.Run("Notary signatures do not count against a key-only rule's bounds", func(t *testing.T) {
		d := push("many-notary-key", func(d name.Digest) error {
			for i := range 65 {
				if err := registrytest.PushReferrer(d, notationtest.ArtifactType, notationtest.JWS, fmt.Appendf(nil, `{"n":%d}`, i), nil); err != nil {
					return err
				}
			}
			return key.Sign(d)
		})
		expectVerdict(t, notationVerdict(t, &sources{}, keyRules, d), "")
	})
}
