package verify

// Keys in key management services: the public keys of awskms://, gcpkms://, azurekms:// and
// hashivault:// references, fetched with the manager's own identity through sigstore's KMS
// clients, cached, and refreshed in the background. Nothing here runs at admission: a
// verify section compiles with the cached key, or is not Ready until the key is fetched.

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	awskms "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	azurekms "github.com/sigstore/sigstore/pkg/signature/kms/azure"
	gcpkms "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	hashivault "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/imagegate/imagegate/internal/text"
)

// KMSSource gives the public key of a KMS reference: the manager's Remote (cached), the
// CLI's direct fetch. A Sources that is not one compiles no kms key.
type KMSSource interface {
	KMSKey(ref string) (crypto.PublicKey, error)
}

// azureVaultSuffixes are the hosts of Azure Key Vault and Managed HSM in Azure's clouds: an
// azurekms reference names one of them, never another host the manager would present its
// Azure token to.
var azureVaultSuffixes = []string{
	".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".vault.microsoftazure.de",
	".managedhsm.azure.net", ".managedhsm.azure.cn", ".managedhsm.usgovcloudapi.net",
}

// ValidateKMSReference accepts the four schemes, each in the form its provider takes; an AWS
// reference without an endpoint (the endpoint is the manager's: a policy must not choose
// where the manager presents its cloud identity), an Azure one on a Key Vault host. Other
// schemes are refused: sigstore would run a plugin binary named after them.
func ValidateKMSReference(ref string) error {
	scheme, rest, ok := strings.Cut(ref, "://")
	if !ok {
		return fmt.Errorf("kms %q is not a key reference (awskms://, gcpkms://, azurekms://, hashivault://)", text.Cut(ref, 128))
	}
	var err error
	switch scheme {
	case "awskms":
		if !strings.HasPrefix(rest, "/") {
			return fmt.Errorf("kms %q names an endpoint: an awskms reference names the key only (awskms:///alias/release); the endpoint is the manager's (AWS_ENDPOINT_URL_KMS)", text.Cut(ref, 128))
		}
		err = awskms.ValidReference(ref)
	case "gcpkms":
		err = gcpkms.ValidReference(ref)
	case "azurekms":
		if err = azurekms.ValidReference(ref); err == nil {
			host, _, _ := strings.Cut(rest, "/")
			if !hasAnySuffix(strings.ToLower(host), azureVaultSuffixes) {
				return fmt.Errorf("kms %q: %q is not an Azure Key Vault or Managed HSM host (*.vault.azure.net, ...)", text.Cut(ref, 128), text.Cut(host, 128))
			}
		}
	case "hashivault":
		err = hashivault.ValidReference(ref)
	default:
		return fmt.Errorf("kms %q: the scheme %q is not one imagegate reads keys from (awskms, gcpkms, azurekms, hashivault)", text.Cut(ref, 128), text.Cut(scheme, 32))
	}
	if err != nil {
		return fmt.Errorf("kms %q: %w", text.Cut(ref, 128), err)
	}
	return nil
}

func hasAnySuffix(s string, suffixes []string) bool {
	for _, x := range suffixes {
		if strings.HasSuffix(s, x) && len(s) > len(x) {
			return true
		}
	}
	return false
}

// FetchKMSKey fetches the public key of a valid reference with sigstore's client for its
// scheme, which reads the manager's identity the way the cloud's SDK does (the AWS SDK's
// default chain: IRSA, EKS Pod Identity, ...; Google's application default credentials;
// azidentity's default chain; VAULT_ADDR and VAULT_TOKEN). It returns when ctx ends, even
// where a client takes no context.
func FetchKMSKey(ctx context.Context, ref string) (crypto.PublicKey, error) {
	if err := ValidateKMSReference(ref); err != nil {
		return nil, err
	}
	return withinContext(ctx, func() (crypto.PublicKey, error) { return fetchKMSKey(ctx, ref) })
}

func fetchKMSKey(ctx context.Context, ref string) (crypto.PublicKey, error) {
	var sv interface {
		PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error)
	}
	var err error
	switch {
	case strings.HasPrefix(ref, "awskms://"):
		sv, err = awskms.LoadSignerVerifier(ctx, ref)
	case strings.HasPrefix(ref, "gcpkms://"):
		sv, err = gcpkms.LoadSignerVerifier(ctx, ref)
	case strings.HasPrefix(ref, "azurekms://"):
		sv, err = azurekms.LoadSignerVerifier(ctx, ref)
	case strings.HasPrefix(ref, "hashivault://"):
		sv, err = hashivault.LoadSignerVerifier(ref, crypto.SHA256)
	default:
		err = errors.New("unknown scheme")
	}
	if err != nil {
		return nil, err
	}
	return sv.PublicKey(options.WithContext(ctx))
}

// loadKMSKey makes the verifier of a KMS key signer, and the bytes its trust version hashes.
func loadKMSKey(src Sources, ref string) (signature.Verifier, []byte, error) {
	ks, ok := src.(KMSSource)
	if !ok {
		return nil, nil, fmt.Errorf("kms %q: KMS keys are not read here", ref)
	}
	pub, err := ks.KMSKey(ref)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("kms %q: the public key cannot be used: %w", ref, err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("kms %q: the public key cannot verify signatures: %w", ref, err)
	}
	return v, append([]byte(ref+"\n"), der...), nil
}
