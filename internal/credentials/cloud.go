package credentials

// Cloud registries read with the manager's own cloud identity, through the library each
// cloud ships for it: ECR with amazon-ecr-credential-helper's client (the AWS SDK's default
// chain: IRSA, EKS Pod Identity, instance roles), Artifact Registry and GCR with Google's
// application default credentials (GKE Workload Identity, the metadata server), ACR with
// azidentity's default chain (AKS workload identity) exchanged for an ACR refresh token.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/containers/azcontainerregistry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	ecrapi "github.com/awslabs/amazon-ecr-credential-helper/ecr-login/api"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/google"
	"golang.org/x/sync/singleflight"
)

// Cloud providers imagegate reads registries with.
const (
	CloudECR    = "ecr"
	CloudGoogle = "google"
	CloudACR    = "acr"
)

// CloudProviders lists them, in the order --cloud-registry-credentials documents.
var CloudProviders = []string{CloudECR, CloudGoogle, CloudACR}

// acrUser is the user name ACR wants with a refresh token as the password.
const acrUser = "00000000-0000-0000-0000-000000000000"

// Cloud is an authn.Keychain for the registries of the clouds it is given, with the
// manager's identity; for other registries it has nothing (Anonymous), so that it combines
// with other keychains. Credentials are cached per registry until shortly before they expire
// and shared by concurrent lookups, and fetched again in the background before then; a failing
// identity is an error naming the cloud and why.
type Cloud struct {
	providers map[string]bool
	// azure configures the Azure clients (tests: a transport that reaches local servers).
	azure azcore.ClientOptions
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cloudEntry
	group singleflight.Group
}

type cloudEntry struct {
	auth               authn.AuthConfig
	expires, refreshAt time.Time
}

// NewCloud returns the keychain for the named providers (ecr, google, acr).
func NewCloud(providers []string) (*Cloud, error) {
	c := &Cloud{providers: map[string]bool{}, cache: map[string]cloudEntry{}, now: time.Now}
	for _, p := range providers {
		p = strings.TrimSpace(p)
		if !slices.Contains(CloudProviders, p) {
			return nil, fmt.Errorf("unknown cloud registry provider %q (%s)", p, strings.Join(CloudProviders, ", "))
		}
		c.providers[p] = true
	}
	return c, nil
}

func isECRHost(host string) bool {
	_, err := ecrapi.ExtractRegistry(host)
	return err == nil
}

func isGoogleHost(host string) bool {
	return host == "gcr.io" || strings.HasSuffix(host, ".gcr.io") || strings.HasSuffix(host, ".pkg.dev")
}

func isACRHost(host string) bool {
	for _, s := range []string{".azurecr.io", ".azurecr.cn", ".azurecr.us"} {
		if strings.HasSuffix(host, s) && len(host) > len(s) {
			return true
		}
	}
	return false
}

// Resolve implements authn.Keychain.
func (c *Cloud) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return c.ResolveContext(context.Background(), r)
}

// ResolveContext implements authn.ContextKeychain: the lookup ends with ctx.
func (c *Cloud) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	host := r.RegistryStr()
	var provider string
	var fetch func(context.Context) (authn.AuthConfig, time.Time, error)
	switch {
	case c.providers[CloudECR] && isECRHost(host):
		provider, fetch = CloudECR, func(ctx context.Context) (authn.AuthConfig, time.Time, error) { return c.ecr(ctx, host) }
	case c.providers[CloudGoogle] && isGoogleHost(host):
		provider, fetch = CloudGoogle, c.google
	case c.providers[CloudACR] && isACRHost(host):
		provider, fetch = CloudACR, func(ctx context.Context) (authn.AuthConfig, time.Time, error) { return c.acr(ctx, host) }
	default:
		return authn.Anonymous, nil
	}
	key := provider + "/" + host
	refresh := func() (any, error) {
		// The fetch outlives one caller's deadline, bounded by its own, so that the next
		// lookup finds the token.
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		auth, expires, err := fetch(fctx)
		if err != nil {
			return nil, err
		}
		// Used until a minute before it expires, at most an hour; fetched again in the
		// background from three quarters of that on.
		now := c.now()
		until := expires.Add(-time.Minute)
		if limit := now.Add(time.Hour); until.After(limit) {
			until = limit
		}
		c.mu.Lock()
		if len(c.cache) >= maxCacheEntries {
			clear(c.cache)
		}
		c.cache[key] = cloudEntry{auth: auth, expires: until, refreshAt: now.Add(until.Sub(now) * 3 / 4)}
		c.mu.Unlock()
		return auth, nil
	}
	c.mu.Lock()
	e, ok := c.cache[key]
	c.mu.Unlock()
	if now := c.now(); ok && now.Before(e.expires) {
		if now.After(e.refreshAt) {
			// Refresh ahead: this lookup keeps the valid token; one fetch replaces it (a
			// failure leaves it, and the next lookup tries again).
			c.group.DoChan(key, refresh)
		}
		return authn.FromConfig(e.auth), nil
	}
	ch := c.group.DoChan(key, refresh)
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, fmt.Errorf("the %s credentials of the manager's cloud identity for %s: %w", provider, host, res.Err)
		}
		return authn.FromConfig(res.Val.(authn.AuthConfig)), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("the %s credentials of the manager's cloud identity for %s: %w", provider, host, ctx.Err())
	}
}

// ecr asks ECR for an authorization token (valid 12 hours) with the AWS SDK's default chain.
func (c *Cloud) ecr(ctx context.Context, host string) (authn.AuthConfig, time.Time, error) {
	reg, err := ecrapi.ExtractRegistry(host)
	region := ""
	if err == nil {
		region = reg.Region
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(or(region, os.Getenv("AWS_REGION"))))
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	// The helper's own file cache in its default place (~/.ecr, private to the user, as
	// docker-credential-ecr-login keeps it; unwritable in the manager's container, where it
	// is skipped): never a shared directory such as /tmp, whose cache file another user could
	// plant or read.
	client, err := ecrapi.DefaultClientFactory{}.NewClientWithOptions(ctx, ecrapi.Options{Config: cfg})
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, err
	}
	auth, err := client.GetCredentials(ctx, host)
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, err
	}
	return authn.AuthConfig{Username: auth.Username, Password: auth.Password}, c.now().Add(12 * time.Hour), nil
}

// google takes an access token from the application default credentials.
func (c *Cloud) google(ctx context.Context) (authn.AuthConfig, time.Time, error) {
	a, err := google.NewEnvAuthenticator(ctx)
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, err
	}
	ac, err := a.Authorization()
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, err
	}
	// Access tokens from the metadata server last an hour; the library does not say when
	// this one expires, so it is used for five minutes.
	return *ac, c.now().Add(5 * time.Minute), nil
}

// acr exchanges an Azure AD token of the manager's identity for an ACR refresh token.
func (c *Cloud) acr(ctx context.Context, host string) (authn.AuthConfig, time.Time, error) {
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: c.azure})
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, fmt.Errorf("the Azure identity: %w", err)
	}
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://containerregistry.azure.net/.default"}})
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, fmt.Errorf("an Azure AD token: %w", err)
	}
	client, err := azcontainerregistry.NewAuthenticationClient("https://"+host, &azcontainerregistry.AuthenticationClientOptions{ClientOptions: c.azure})
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, err
	}
	resp, err := client.ExchangeAADAccessTokenForACRRefreshToken(ctx, azcontainerregistry.PostContentSchemaGrantTypeAccessToken, host,
		&azcontainerregistry.AuthenticationClientExchangeAADAccessTokenForACRRefreshTokenOptions{AccessToken: &tok.Token})
	if err != nil {
		return authn.AuthConfig{}, time.Time{}, fmt.Errorf("exchanging the Azure AD token for an ACR refresh token: %w", err)
	}
	if resp.RefreshToken == nil || *resp.RefreshToken == "" {
		return authn.AuthConfig{}, time.Time{}, errors.New("ACR answered no refresh token")
	}
	expires := jwtExpiry(*resp.RefreshToken)
	if expires.IsZero() {
		expires = c.now().Add(time.Hour)
	}
	return authn.AuthConfig{Username: acrUser, Password: *resp.RefreshToken}, expires, nil
}

// jwtExpiry reads the exp claim of a JWT without verifying it (the registry that issued it
// checks it); zero when there is none.
func jwtExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Time{}
	}
	return time.Unix(claims.Exp, 0)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Keychain is the registry credentials the manager's and the CLI's flags name: the image
// credential providers of a kubelet CredentialProviderConfig (providerConfig, binDir), then
// the cloud identities of a comma-separated list (ecr, google, acr); nil when none. log
// receives a failing plugin's stderr.
func Keychain(providerConfig, binDir, clouds string, log func(provider, stderr string)) (authn.Keychain, error) {
	var kcs []authn.Keychain
	if (providerConfig == "") != (binDir == "") {
		return nil, errors.New("--image-credential-provider-config and --image-credential-provider-bin-dir go together")
	}
	if providerConfig != "" {
		providers, err := Load(providerConfig, binDir)
		if err != nil {
			return nil, fmt.Errorf("--image-credential-provider-config: %w", err)
		}
		providers.Log = log
		kcs = append(kcs, providers)
	}
	var list []string
	for _, c := range strings.Split(clouds, ",") {
		if c = strings.TrimSpace(c); c != "" {
			list = append(list, c)
		}
	}
	if len(list) > 0 {
		cloud, err := NewCloud(list)
		if err != nil {
			return nil, fmt.Errorf("--cloud-registry-credentials: %w", err)
		}
		kcs = append(kcs, cloud)
	}
	switch len(kcs) {
	case 0:
		return nil, nil
	case 1:
		return kcs[0], nil
	}
	return authn.NewMultiKeychain(kcs...), nil
}
