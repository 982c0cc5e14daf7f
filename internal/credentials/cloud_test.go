package credentials

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/test/utils/cloudtest"
)

func resolve(t *testing.T, kc authn.Keychain, registry string) (*authn.AuthConfig, error) {
	t.Helper()
	reg, err := name.NewRegistry(registry)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kc.Resolve(reg)
	if err != nil {
		return nil, err
	}
	return a.Authorization()
}

func TestCloudProviders(t *testing.T) {
	if _, err := NewCloud([]string{"ecr", "dockerhub"}); err == nil || !strings.Contains(err.Error(), `unknown cloud registry provider "dockerhub" (ecr, google, acr)`) {
		t.Errorf("an unknown provider: %v", err)
	}
	c, err := NewCloud([]string{"ecr"})
	if err != nil {
		t.Fatal(err)
	}
	// Registries of other clouds, and of none, get nothing from it.
	for _, r := range []string{"us-docker.pkg.dev", "acme.azurecr.io", "ghcr.io", "111122223333.dkr.ecr.us-east-1.amazonaws.com.evil.example"} {
		if a, err := resolve(t, c, r); err != nil || a.Username != "" || a.Password != "" {
			t.Errorf("%s: %+v, %v", r, a, err)
		}
	}
}

func TestCloudECR(t *testing.T) {
	aws := cloudtest.NewAWS("AKIAIMAGEGATEECR0001")
	t.Cleanup(aws.Close)
	aws.Environment(t, true)
	c, err := NewCloud([]string{"ecr"})
	if err != nil {
		t.Fatal(err)
	}
	const registry = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			a, err := resolve(t, c, registry)
			if err != nil || a.Username != "AWS" || a.Password != cloudtest.ECRPassword {
				t.Errorf("got %+v, %v", a, err)
			}
		})
	}
	wg.Wait()
	if n := aws.Requests(); n != 1 {
		t.Errorf("8 concurrent lookups and a cached token made %d requests to ECR, want 1", n)
	}

	// Past three quarters of the token's use (an hour at most), a lookup still gets the
	// cached token at once, and a fetch in the background replaces it.
	start := time.Now()
	c.now = func() time.Time { return start.Add(50 * time.Minute) }
	if a, err := resolve(t, c, registry); err != nil || a.Password != cloudtest.ECRPassword {
		t.Fatalf("a lookup while refreshing: %+v, %v", a, err)
	}
	for deadline := time.Now().Add(10 * time.Second); aws.Requests() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh ahead of expiry: %d requests", aws.Requests())
		}
	}

	// An identity ECR refuses: the error names the cloud, the registry and ECR's answer.
	c2, _ := NewCloud([]string{"ecr"})
	aws.Fail(true)
	_, err = resolve(t, c2, registry)
	if err == nil || !strings.Contains(err.Error(), "the ecr credentials of the manager's cloud identity for "+registry) || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Errorf("a refused identity: %v", err)
	}
}

func TestCloudGoogle(t *testing.T) {
	md := cloudtest.NewGCEMetadata("ya29.imagegate")
	t.Cleanup(md.Close)
	t.Setenv("GCE_METADATA_HOST", md.Host())
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	c, err := NewCloud([]string{"google"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		a, err := resolve(t, c, "us-docker.pkg.dev")
		if err != nil || a.Username != "_token" || a.Password != "ya29.imagegate" {
			t.Fatalf("got %+v, %v", a, err)
		}
	}
	if n := md.Tokens(); n != 1 {
		t.Errorf("3 lookups fetched %d tokens, want 1", n)
	}
	md.Fail(true)
	c2, _ := NewCloud([]string{"google"})
	if _, err := resolve(t, c2, "gcr.io"); err == nil || !strings.Contains(err.Error(), "the google credentials of the manager's cloud identity for gcr.io") {
		t.Errorf("a failing metadata server: %v", err)
	}
}

// redirect sends every request to the fake's address, as DNS would send the registry's name
// and Azure AD's to Azure.
type redirect struct {
	to *url.URL
	rt http.RoundTripper
}

func (r redirect) Do(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host = r.to.Scheme, r.to.Host
	return r.rt.RoundTrip(req)
}

func TestCloudACR(t *testing.T) {
	az := cloudtest.NewAzure("aks-projected-token", "tenant-1", "client-1")
	t.Cleanup(az.Close)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("aks-projected-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	// What AKS's workload identity webhook puts in the Pod's environment.
	for k, v := range map[string]string{
		"AZURE_CLIENT_ID": "client-1", "AZURE_TENANT_ID": "tenant-1", "AZURE_FEDERATED_TOKEN_FILE": token,
		"AZURE_AUTHORITY_HOST": az.URL, "AZURE_CLIENT_SECRET": "", "AZURE_CLIENT_CERTIFICATE_PATH": "", "AZURE_USERNAME": "",
	} {
		t.Setenv(k, v)
	}
	to, _ := url.Parse(az.URL)
	c, err := NewCloud([]string{"acr"})
	if err != nil {
		t.Fatal(err)
	}
	c.azure = azcore.ClientOptions{Transport: redirect{to: to, rt: az.Client().Transport}}
	for range 3 {
		a, err := resolve(t, c, "acme.azurecr.io")
		if err != nil || a.Username != "00000000-0000-0000-0000-000000000000" || a.Password == "" {
			t.Fatalf("got %+v, %v", a, err)
		}
	}
	if n := az.RefreshTokens(); n != 1 {
		t.Errorf("3 lookups exchanged %d tokens, want 1", n)
	}
	az.Fail(true)
	c2, _ := NewCloud([]string{"acr"})
	c2.azure = c.azure
	if _, err := resolve(t, c2, "acme.azurecr.io"); err == nil || !strings.Contains(err.Error(), "the acr credentials of the manager's cloud identity for acme.azurecr.io: exchanging the Azure AD token for an ACR refresh token") {
		t.Errorf("a refused exchange: %v", err)
	}
}
