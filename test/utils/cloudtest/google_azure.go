package cloudtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"
)

// GCEMetadata is the GCE metadata server (GCE_METADATA_HOST) as GKE Workload Identity serves
// it: the default service account's access token.
type GCEMetadata struct {
	*httptest.Server
	Token    string
	tokens   atomic.Int64
	failing  atomic.Bool
	requests atomic.Int64
}

// NewGCEMetadata serves token as the default service account's.
func NewGCEMetadata(token string) *GCEMetadata {
	m := &GCEMetadata{Token: token}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	return m
}

// Host is what GCE_METADATA_HOST takes.
func (m *GCEMetadata) Host() string { return strings.TrimPrefix(m.URL, "http://") }

// Tokens counts the tokens handed out.
func (m *GCEMetadata) Tokens() int64 { return m.tokens.Load() }

// Fail makes the token endpoint fail.
func (m *GCEMetadata) Fail(on bool) { m.failing.Store(on) }

func (m *GCEMetadata) serve(w http.ResponseWriter, r *http.Request) {
	m.requests.Add(1)
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing Metadata-Flavor:Google header", http.StatusForbidden)
		return
	}
	w.Header().Set("Metadata-Flavor", "Google")
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/service-accounts/default/token"):
		if m.failing.Load() {
			http.Error(w, "the fake metadata server is failing", http.StatusServiceUnavailable)
			return
		}
		m.tokens.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": m.Token, "expires_in": 3599, "token_type": "Bearer"})
	case strings.HasSuffix(p, "/project/project-id"):
		_, _ = fmt.Fprint(w, "acme-project")
	case strings.HasSuffix(p, "/universe/universe-domain"):
		_, _ = fmt.Fprint(w, "googleapis.com")
	case p == "/" || p == "/computeMetadata/v1/" || p == "/computeMetadata/v1":
		_, _ = fmt.Fprint(w, "")
	default:
		http.NotFound(w, r)
	}
}

// Azure is Azure AD's token endpoint for a workload identity (AZURE_AUTHORITY_HOST) and ACR's
// token exchange (/oauth2/exchange) on one HTTPS server.
type Azure struct {
	*httptest.Server
	// FederatedToken is the service account token AKS projects; TenantID and ClientID the
	// identity's.
	FederatedToken, TenantID, ClientID string
	// RefreshTokens counts the ACR refresh tokens handed out.
	refreshTokens atomic.Int64
	failing       atomic.Bool
}

// aadToken is the access token Azure AD hands out for the federated token.
const aadToken = "aad-access-token"

// NewAzure serves Azure AD and ACR's exchange over TLS (Client trusts it).
func NewAzure(federatedToken, tenant, client string) *Azure {
	a := &Azure{FederatedToken: federatedToken, TenantID: tenant, ClientID: client}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	return a
}

// RefreshTokens counts the ACR refresh tokens handed out.
func (a *Azure) RefreshTokens() int64 { return a.refreshTokens.Load() }

// Fail makes the exchange fail.
func (a *Azure) Fail(on bool) { a.failing.Store(on) }

// RefreshToken is a JWT as ACR issues them, expiring at exp.
func RefreshToken(exp time.Time) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	return enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{"exp": exp.Unix(), "grant_type": "refresh_token"}) + ".c2lnbmF0dXJl"
}

func (a *Azure) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	w.Header().Set("Content-Type", "application/json")
	base := a.URL + "/" + a.TenantID
	switch p := r.URL.Path; {
	case p == "/common/discovery/instance":
		host := strings.TrimPrefix(a.URL, "https://")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"tenant_discovery_endpoint": base + "/v2.0/.well-known/openid-configuration", "api-version": "1.1",
			"metadata": []map[string]any{{"preferred_network": host, "preferred_cache": host, "aliases": []string{host}}},
		})
	case strings.HasSuffix(p, "/v2.0/.well-known/openid-configuration"):
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer": base + "/v2.0", "device_authorization_endpoint": base + "/oauth2/v2.0/devicecode",
		})
	case p == "/"+a.TenantID+"/oauth2/v2.0/token":
		if r.Form.Get("client_assertion") != a.FederatedToken || r.Form.Get("client_id") != a.ClientID {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid_client", "error_description": "AADSTS700213: No matching federated identity record found for presented assertion."})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": aadToken, "expires_in": 3600, "ext_expires_in": 3600, "token_type": "Bearer"})
	case p == "/oauth2/exchange":
		if a.failing.Load() || r.Form.Get("grant_type") != "access_token" || r.Form.Get("access_token") != aadToken {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": "the identity may not pull from this registry"}}})
			return
		}
		a.refreshTokens.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"refresh_token": RefreshToken(time.Now().Add(3 * time.Hour))})
	default:
		http.NotFound(w, r)
	}
}
