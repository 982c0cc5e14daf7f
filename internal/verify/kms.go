package verify

// Keys in key management services: the public keys of awskms://, gcpkms://, azurekms:// and
// hashivault:// references, fetched with the manager's own identity through sigstore's KMS
// clients, cached, and refreshed in the background. Nothing here runs at admission: a
// verify section compiles with the cached key, or is not Ready until the key is fetched.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	awskms "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	azurekms "github.com/sigstore/sigstore/pkg/signature/kms/azure"
	gcpkms "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	hashivault "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/imagegate/imagegate/internal/text"
)

// KMSSource gives the public key of a KMS reference: the manager's KMSKeys (cached), the
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
	type result struct {
		key crypto.PublicKey
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := fetchKMSKey(ctx, ref)
		done <- result{k, err}
	}()
	select {
	case r := <-done:
		return r.key, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("fetching the public key of %s: %w", ref, ctx.Err())
	}
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

// KMSKeys is the manager's cache of KMS public keys. A key is fetched in the background the
// first time a policy names it (the policy is not Ready until then), refreshed every Refresh
// and, at most once a minute, when a policy naming it is compiled again; a failed refresh
// keeps the key it had, so that a KMS outage never stops admissions. A key no compiled policy
// has asked for since the last refresh round is dropped.
type KMSKeys struct {
	// Fetch fetches one key; nil: FetchKMSKey.
	Fetch func(ctx context.Context, ref string) (crypto.PublicKey, error)
	// Refresh is how often keys are fetched again (default 10 minutes); Retry how often a key
	// that could not be fetched is tried again (default 30 seconds); Timeout bounds a fetch
	// (default 10 seconds).
	Refresh, Retry, Timeout time.Duration
	// OnChange is called when a key was fetched, changed or failed differently: the policies
	// must be compiled again.
	OnChange func()
	// Log reports fetches that failed; nil: none.
	Log func(ref string, err error, cached bool)

	mu      sync.Mutex
	entries map[string]*kmsEntry
	round   time.Time // when the last refresh round began
}

type kmsEntry struct {
	key       crypto.PublicKey
	der       []byte
	err       error
	attempted time.Time
	requested time.Time
	fetching  bool
}

const kmsRecompileRefresh = time.Minute

func (k *KMSKeys) refresh() time.Duration { return durationOr(k.Refresh, 10*time.Minute) }
func (k *KMSKeys) retry() time.Duration   { return durationOr(k.Retry, 30*time.Second) }
func (k *KMSKeys) timeout() time.Duration { return durationOr(k.Timeout, 10*time.Second) }

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// KMSKey implements KMSSource from the cache.
func (k *KMSKeys) KMSKey(ref string) (crypto.PublicKey, error) {
	if err := ValidateKMSReference(ref); err != nil {
		return nil, err
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.entries == nil {
		k.entries = map[string]*kmsEntry{}
	}
	e := k.entries[ref]
	if e == nil {
		e = &kmsEntry{}
		k.entries[ref] = e
	}
	e.requested = now
	switch {
	case e.key != nil:
		if !e.fetching && now.Sub(e.attempted) >= kmsRecompileRefresh {
			k.start(ref, e)
		}
		return e.key, nil
	case e.fetching || e.attempted.IsZero():
		if !e.fetching {
			k.start(ref, e)
		}
		return nil, fmt.Errorf("the public key of %s is being fetched from the KMS", ref)
	default:
		return nil, fmt.Errorf("the public key of %s could not be fetched (tried again every %s): %w", ref, k.retry(), e.err)
	}
}

// start fetches ref in the background; k.mu is held.
func (k *KMSKeys) start(ref string, e *kmsEntry) {
	e.fetching = true
	go k.fetch(ref, e)
}

func (k *KMSKeys) fetch(ref string, e *kmsEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout())
	defer cancel()
	fetch := k.Fetch
	if fetch == nil {
		fetch = FetchKMSKey
	}
	key, err := fetch(ctx, ref)
	var der []byte
	if err == nil {
		if der, err = x509.MarshalPKIXPublicKey(key); err != nil {
			err = fmt.Errorf("the KMS returned a public key imagegate cannot use: %w", err)
		}
	}
	k.mu.Lock()
	e.fetching, e.attempted = false, time.Now()
	var changed bool
	if err == nil {
		changed = e.key == nil || !bytes.Equal(der, e.der)
		e.key, e.der, e.err = key, der, nil
	} else {
		// A key already fetched stays in use; a key never fetched reports the new failure.
		changed = e.key == nil && (e.err == nil || e.err.Error() != err.Error())
		e.err = err
	}
	cached := e.key != nil
	k.mu.Unlock()
	if err != nil && k.Log != nil {
		k.Log(ref, err, cached)
	}
	if changed && k.OnChange != nil {
		k.OnChange()
	}
}

// Start refreshes the keys until ctx ends: a manager.Runnable.
func (k *KMSKeys) Start(ctx context.Context) error {
	k.mu.Lock()
	k.round = time.Now()
	k.mu.Unlock()
	t := time.NewTicker(k.retry())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			k.tick(now)
		}
	}
}

// tick tries again the keys that could not be fetched and, every Refresh, begins a round:
// keys no compilation asked for since the last round are dropped, the others fetched again,
// and the policies compiled again (which asks for the keys still named).
func (k *KMSKeys) tick(now time.Time) {
	k.mu.Lock()
	newRound := now.Sub(k.round) >= k.refresh()
	for ref, e := range k.entries {
		switch {
		case e.fetching:
		case newRound && !k.round.IsZero() && e.requested.Before(k.round):
			delete(k.entries, ref)
		case newRound, e.key == nil && now.Sub(e.attempted) >= k.retry():
			k.start(ref, e)
		}
	}
	if newRound {
		k.round = now
	}
	k.mu.Unlock()
	if newRound && k.OnChange != nil {
		k.OnChange()
	}
}

// Len is the number of keys cached or being fetched.
func (k *KMSKeys) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries)
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

// NeedLeaderElection is false: every replica compiles the policies, so every replica needs
// the keys.
func (k *KMSKeys) NeedLeaderElection() bool { return false }
