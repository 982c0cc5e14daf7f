package verify

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/attest"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/text"
)

// Sources reads the Secrets and ConfigMaps of imagegate's own namespace that verify sections
// name (the manager's cache of that one namespace; the policy files for the CLI).
type Sources interface {
	Secret(name string) (*corev1.Secret, error)
	ConfigMap(name string) (*corev1.ConfigMap, error)
}

// ErrNotFound is what a Sources returns for an object that does not exist.
var ErrNotFound = errors.New("not found")

// Trust is a verify section's trust material, ready to check signatures with.
type Trust struct {
	signers []signer
	// required is how many different signers must have signed (requiredSigners, at least 1).
	required int
	// root holds the trusted root (Fulcio CAs, Rekor and CT log keys, TSAs); an empty
	// collection without one.
	root root.TrustedMaterial
	// tlog says a transparency log entry is required.
	tlog bool
	// keychain holds the credentials of the pull secrets; nil: the Verifier's default.
	keychain authn.Keychain
	// credentials identifies keychain (a digest of the secrets) and cloud, so that registry
	// clients are shared only between rules with the same credentials.
	credentials string
	// cloud lists the manager's cloud identities the rule also reads with (ecr, google, acr).
	cloud []string
	// attestations are the attestation rules, each with the signers it accepts.
	attestations []*attestationRule
	// namespaced: the rule is a namespace's ImagePolicy's (Options.NamespaceInternalRegistries).
	namespaced bool
	// version is a digest of the material (policy.Trust).
	version string
	// indexTrust is how an image index is trusted (Index when unset).
	indexTrust v1alpha1.IndexTrust
}

// cosignSigners reports whether any signer reads cosign's formats (all but notation signers).
func (t *Trust) cosignSigners() bool {
	for i := range t.signers {
		if t.signers[i].notation == nil {
			return true
		}
	}
	return false
}

// notationSigners reports whether any signer reads Notary signatures.
func (t *Trust) notationSigners() bool {
	for i := range t.signers {
		if t.signers[i].notation != nil {
			return true
		}
	}
	return false
}

// Version is a digest of the trust material: it changes whenever the material does.
func (t *Trust) Version() string { return t.version }

type signer struct {
	name       string
	key        signature.Verifier // key signers
	identities []identity         // keyless signers
	// certificate signers: the private CA (with the trusted root's logs) and the names.
	pki   *pkiMaterial
	names *sanRule
	// notation signers: a Notation trust policy statement.
	notation *notationSigner
}

// describe is how messages name the signer: key "release", keyless "github-actions",
// certificate "corp-pki".
func (s *signer) describe() string {
	switch {
	case s.key != nil:
		return fmt.Sprintf("key %q", s.name)
	case s.pki != nil:
		return fmt.Sprintf("certificate %q", s.name)
	case s.notation != nil:
		return fmt.Sprintf("notation %q", s.name)
	}
	return fmt.Sprintf("keyless %q", s.name)
}

// Compiler returns the policy.TrustCompiler that reads trust material from src.
func Compiler(src Sources) policy.TrustCompiler {
	return func(ref policy.Ref, rules *v1alpha1.VerifyRules) (policy.Trust, error) {
		t, err := compileTrust(src, rules)
		if err != nil {
			return nil, err
		}
		t.namespaced = ref.Namespace != ""
		return t, nil
	}
}

func compileTrust(src Sources, rules *v1alpha1.VerifyRules) (*Trust, error) {
	h := sha256.New()
	t := &Trust{tlog: rules.TransparencyLog != v1alpha1.TransparencyLogSkip, root: root.TrustedMaterialCollection{}, required: max(1, int(rules.RequiredSigners)),
		indexTrust: rules.IndexTrust}
	if t.required > len(rules.Signers) {
		return nil, fmt.Errorf("requiredSigners is %d, but the rule has %d %s", t.required, len(rules.Signers), text.Plural(len(rules.Signers), "signer", "signers"))
	}
	if ref := rules.TrustedRoot; ref.Name != "" {
		key := or(ref.Key, "trusted_root.json")
		data, err := configMapKey(src, "trustedRoot", ref.Name, key)
		if err != nil {
			return nil, err
		}
		tr, err := root.NewTrustedRootFromJSON([]byte(data))
		if err != nil {
			return nil, fmt.Errorf("trustedRoot: ConfigMap %q key %q is not a valid trusted_root.json: %w", ref.Name, key, err)
		}
		t.root = tr
		h.Write([]byte(data))
	}
	tufRoots, raw, err := loadTUFRoots(src, rules.TUFRoots)
	if err != nil {
		return nil, err
	}
	if len(tufRoots) > 0 {
		// Several roots at once (a ConfigMap's and each repository's): a signature counts
		// when any of them vouches for it.
		all := root.TrustedMaterialCollection(tufRoots)
		if rules.TrustedRoot.Name != "" {
			all = append(root.TrustedMaterialCollection{t.root}, all...)
		}
		t.root = all
		for _, b := range raw {
			h.Write(b)
		}
	}
	hasRoot := rules.TrustedRoot.Name != "" || len(rules.TUFRoots) > 0
	for i := range rules.Signers {
		sp := &rules.Signers[i]
		s := signer{name: sp.Name}
		switch {
		case sp.Key.KMS != "":
			v, material, err := loadKMSKey(src, sp.Key.KMS)
			if err != nil {
				return nil, fmt.Errorf("signers[%d] %q: %w", i, sp.Name, err)
			}
			s.key = v
			h.Write(material)
		case sp.Key.IsSet():
			pem := []byte(sp.Key.PublicKey)
			if ref := sp.Key.SecretRef; ref.Name != "" {
				key := ref.Key
				if key == "" {
					key = "cosign.pub"
				}
				sec, err := src.Secret(string(ref.Name))
				if err != nil {
					return nil, fmt.Errorf("signers[%d] %q: Secret %q: %w", i, sp.Name, ref.Name, err)
				}
				var ok bool
				if pem, ok = sec.Data[key]; !ok {
					return nil, fmt.Errorf("signers[%d] %q: Secret %q has no key %q", i, sp.Name, ref.Name, key)
				}
			}
			v, err := loadKey(pem)
			if err != nil {
				return nil, fmt.Errorf("signers[%d] %q: the public key does not parse: %w", i, sp.Name, err)
			}
			s.key = v
			h.Write(pem)
		case sp.Keyless.IsSet():
			if !hasRoot {
				return nil, fmt.Errorf("signers[%d] %q: keyless signers need trustedRoot or tufRoots", i, sp.Name)
			}
			for j := range sp.Keyless.Identities {
				id, err := compileIdentity(&sp.Keyless.Identities[j])
				if err != nil {
					return nil, fmt.Errorf("signers[%d] %q: identities[%d]: %w", i, sp.Name, j, err)
				}
				s.identities = append(s.identities, id)
			}
			if len(s.identities) == 0 {
				return nil, fmt.Errorf("signers[%d] %q: keyless needs at least one identity", i, sp.Name)
			}
		case sp.Certificate.IsSet():
			m, names, pem, err := compileCertificateSigner(src, &sp.Certificate, t.root)
			if err != nil {
				return nil, fmt.Errorf("signers[%d] %q: %w", i, sp.Name, err)
			}
			s.pki, s.names = m, names
			h.Write(pem)
		case sp.Notation.IsSet():
			ns, material, err := compileNotationSigner(src, sp.Name, &sp.Notation)
			if err != nil {
				return nil, fmt.Errorf("signers[%d] %q: %w", i, sp.Name, err)
			}
			s.notation = ns
			h.Write(material)
		default:
			return nil, fmt.Errorf("signers[%d] %q: set key, keyless, certificate or notation", i, sp.Name)
		}
		t.signers = append(t.signers, s)
	}
	if err := distinctKeys(t); err != nil {
		return nil, err
	}
	if t.tlog && !hasRoot && t.cosignSigners() {
		return nil, errors.New("trustedRoot or tufRoots is required for transparencyLog: Required")
	}
	var names []string
	for i := range t.signers {
		names = append(names, t.signers[i].name)
	}
	for i := range rules.Attestations {
		ar := &rules.Attestations[i]
		c, err := attest.Compile(ar, names)
		if err != nil {
			return nil, fmt.Errorf("attestations[%d]: %w", i, err)
		}
		r := &attestationRule{Rule: c}
		for j := range t.signers {
			if len(ar.Signers) == 0 || slices.Contains(ar.Signers, t.signers[j].name) {
				if t.signers[j].notation != nil {
					if len(ar.Signers) > 0 {
						return nil, fmt.Errorf("attestations[%d] %q: signer %q is a notation signer, and attestations are read in cosign's formats only", i, ar.Name, t.signers[j].name)
					}
					continue
				}
				r.signers = append(r.signers, &t.signers[j])
			}
		}
		if len(r.signers) == 0 {
			return nil, fmt.Errorf("attestations[%d] %q: no signer can sign it: attestations are read in cosign's formats, and every signer is a notation signer", i, ar.Name)
		}
		for j := range t.signers {
			if slices.Contains(c.VEXSigners, t.signers[j].name) {
				if t.signers[j].notation != nil {
					return nil, fmt.Errorf("attestations[%d] %q: vex signer %q is a notation signer, and VEX documents are read as in-toto attestations only", i, ar.Name, t.signers[j].name)
				}
				r.vexSigners = append(r.vexSigners, &t.signers[j])
			}
		}
		t.attestations = append(t.attestations, r)
	}
	if len(rules.PullSecrets) > 0 {
		ch := sha256.New()
		var secrets []*corev1.Secret
		for _, name := range rules.PullSecrets {
			sec, err := src.Secret(string(name))
			if err != nil {
				return nil, fmt.Errorf("pullSecrets: Secret %q: %w", name, err)
			}
			if sec.Type != corev1.SecretTypeDockerConfigJson {
				return nil, fmt.Errorf("pullSecrets: Secret %q is of type %q, not %s", name, sec.Type, corev1.SecretTypeDockerConfigJson)
			}
			ch.Write(sec.Data[corev1.DockerConfigJsonKey])
			secrets = append(secrets, sec)
		}
		kc, err := keychainFrom(secrets)
		if err != nil {
			return nil, fmt.Errorf("pullSecrets: %w", err)
		}
		t.keychain, t.credentials = kc, hex.EncodeToString(ch.Sum(nil))[:16]
	}
	for _, c := range rules.CloudCredentials {
		t.cloud = append(t.cloud, strings.ToLower(string(c)))
	}
	if len(t.cloud) > 0 {
		slices.Sort(t.cloud)
		t.cloud = slices.Compact(t.cloud)
		t.credentials += "|cloud=" + strings.Join(t.cloud, ",")
	}
	t.version = hex.EncodeToString(h.Sum(nil))[:16]
	return t, nil
}

// configMapKey reads one key of a ConfigMap of imagegate's namespace; field names the
// reference in errors.
func configMapKey(src Sources, field string, name v1alpha1.ObjectName, key string) (string, error) {
	cm, err := src.ConfigMap(string(name))
	if err != nil {
		return "", fmt.Errorf("%s: ConfigMap %q: %w", field, name, err)
	}
	data, ok := cm.Data[key]
	if !ok {
		return "", fmt.Errorf("%s: ConfigMap %q has no key %q", field, name, key)
	}
	return data, nil
}

// anchored makes a regular expression match in full, as the API documents (cosign's
// matchers search; an unanchored "acme" would match "evil-acme-fork").
func anchored(re string) string {
	if re == "" {
		return ""
	}
	return "^(?:" + re + ")$"
}

// distinctKeys refuses, where several signers must each sign, two key signers with the same
// public key: whoever holds that one key would sign as both.
func distinctKeys(t *Trust) error {
	if t.required < 2 {
		return nil
	}
	seen := map[string]int{}
	for i := range t.signers {
		if t.signers[i].key == nil {
			continue
		}
		pub, err := t.signers[i].key.PublicKey()
		if err != nil {
			continue
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			continue
		}
		if j, ok := seen[string(der)]; ok {
			return fmt.Errorf("signers[%d] %q has the same public key as signers[%d] %q: with requiredSigners %d, whoever holds that one key would sign as both", i, t.signers[i].name, j, t.signers[j].name, t.required)
		}
		seen[string(der)] = i
	}
	return nil
}

func loadKey(pem []byte) (signature.Verifier, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem)
	if err != nil {
		return nil, err
	}
	return signature.LoadVerifier(pub, crypto.SHA256)
}
