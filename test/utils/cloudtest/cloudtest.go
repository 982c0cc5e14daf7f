// Package cloudtest serves the parts of the clouds' APIs that imagegate uses, as their
// documentation and SDKs define them: AWS KMS's GetPublicKey and DescribeKey and ECR's
// GetAuthorizationToken (JSON 1.1 over HTTP, SigV4-signed) with STS's
// AssumeRoleWithWebIdentity (IRSA); Vault's transit engine; the GCE metadata server's token;
// Azure AD's token endpoint with ACR's token exchange. Each checks the identity the caller
// presents, counts requests, and can fail or rotate its key.
package cloudtest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/test/utils/registrytest"
)

func der(k *registrytest.Key) []byte {
	d, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		panic(err)
	}
	return d
}

// server is what the fakes share: a key per name, a failure switch, a request count.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	keys     map[string]*registrytest.Key
	failing  bool
	requests atomic.Int64
}

// SetKey makes name hold k (a rotation when it held another).
func (s *server) SetKey(name string, k *registrytest.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[name] = k
}

// Fail makes every request fail with 503 (true) or answer again (false).
func (s *server) Fail(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = on
}

// Requests counts the requests served.
func (s *server) Requests() int64 { return s.requests.Load() }

func (s *server) lookup(name string) (*registrytest.Key, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[name]
	return k, ok, s.failing
}

// AWS is AWS KMS and STS at one endpoint (AWS_ENDPOINT_URL_KMS and AWS_ENDPOINT_URL_STS).
type AWS struct {
	server
	// AccessKeyID is the access key KMS requests must be signed with: the static one given,
	// or the one STS handed out for the web identity token.
	AccessKeyID string
	// WebIdentityToken is the token STS exchanges for AssumedAccessKeyID (IRSA).
	WebIdentityToken string
	RoleARN          string
}

// AssumedAccessKeyID is what STS hands out for the web identity.
const AssumedAccessKeyID = "ASIAIMAGEGATETEST0001" //nolint:gosec // a fake key ID the fake STS hands out

// NewAWS serves KMS and STS; KMS accepts requests signed by accessKeyID.
func NewAWS(accessKeyID string) *AWS {
	a := &AWS{server: server{keys: map[string]*registrytest.Key{}}, AccessKeyID: accessKeyID}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	return a
}

func awsError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

func (a *AWS) serve(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	if r.Header.Get("X-Amz-Target") == "" {
		a.sts(w, r)
		return
	}
	// SigV4: Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, ...
	auth := r.Header.Get("Authorization")
	if strings.HasPrefix(r.Header.Get("X-Amz-Target"), "AmazonEC2ContainerRegistry") {
		a.ecr(w, r, auth)
		return
	}
	if !strings.Contains(auth, "Credential="+a.AccessKeyID+"/") || !strings.Contains(auth, "/kms/aws4_request") {
		awsError(w, http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid.")
		return
	}
	var in struct{ KeyId string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		awsError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	k, ok, failing := a.lookup(in.KeyId)
	switch {
	case failing:
		awsError(w, http.StatusServiceUnavailable, "KMSInternalException", "the fake KMS is failing")
		return
	case !ok:
		awsError(w, http.StatusBadRequest, "NotFoundException", fmt.Sprintf("Alias %s is not found.", in.KeyId))
		return
	}
	arn := "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	switch r.Header.Get("X-Amz-Target") {
	case "TrentService.GetPublicKey":
		_ = json.NewEncoder(w).Encode(map[string]any{
			"KeyId": arn, "PublicKey": base64.StdEncoding.EncodeToString(der(k)),
			"KeySpec": "ECC_NIST_P256", "CustomerMasterKeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY", "SigningAlgorithms": []string{"ECDSA_SHA_256"},
		})
	case "TrentService.DescribeKey":
		_ = json.NewEncoder(w).Encode(map[string]any{"KeyMetadata": map[string]any{
			"KeyId": arn, "Arn": arn, "KeySpec": "ECC_NIST_P256", "CustomerMasterKeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY",
			"KeyState": "Enabled", "Enabled": true, "SigningAlgorithms": []string{"ECDSA_SHA_256"},
		}})
	default:
		awsError(w, http.StatusBadRequest, "UnknownOperationException", r.Header.Get("X-Amz-Target"))
	}
}

// ECRPassword is the password ECR's authorization tokens carry (user AWS).
const ECRPassword = "ecr-t0ken"

// ecr answers GetAuthorizationToken, as ECR does: a base64 "AWS:<password>" valid 12 hours.
func (a *AWS) ecr(w http.ResponseWriter, r *http.Request, auth string) {
	if !strings.Contains(auth, "Credential="+a.AccessKeyID+"/") || !strings.Contains(auth, "/ecr/aws4_request") {
		awsError(w, http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid.")
		return
	}
	a.mu.Lock()
	failing := a.failing
	a.mu.Unlock()
	if failing {
		awsError(w, http.StatusBadRequest, "AccessDeniedException", "User is not authorized to perform: ecr:GetAuthorizationToken")
		return
	}
	if r.Header.Get("X-Amz-Target") != "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken" {
		awsError(w, http.StatusBadRequest, "UnknownOperationException", r.Header.Get("X-Amz-Target"))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(map[string]any{"authorizationData": []map[string]any{{
		"authorizationToken": base64.StdEncoding.EncodeToString([]byte("AWS:" + ECRPassword)),
		"expiresAt":          float64(time.Now().Add(12 * time.Hour).Unix()),
		"proxyEndpoint":      "https://111122223333.dkr.ecr.us-east-1.amazonaws.com",
	}}})
}

// sts answers AssumeRoleWithWebIdentity (a form POST, unsigned) for the configured token.
func (a *AWS) sts(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Form.Get("Action") != "AssumeRoleWithWebIdentity" {
		http.Error(w, "unexpected request", http.StatusBadRequest)
		return
	}
	if a.WebIdentityToken == "" || r.Form.Get("WebIdentityToken") != a.WebIdentityToken || r.Form.Get("RoleArn") != a.RoleARN {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusForbidden)
		_, _ = fmt.Fprint(w, `<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>`)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>
<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>secret</SecretAccessKey><SessionToken>session</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>%s/imagegate</Arn><AssumedRoleId>AROAIMAGEGATE:imagegate</AssumedRoleId></AssumedRoleUser>
</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`, AssumedAccessKeyID, time.Now().Add(time.Hour).UTC().Format(time.RFC3339), a.RoleARN)
}

// Vault is Vault's transit secrets engine at /v1/transit (VAULT_ADDR), for one token.
type Vault struct {
	server
	Token string
}

// NewVault serves the transit engine for requests carrying token.
func NewVault(token string) *Vault {
	v := &Vault{server: server{keys: map[string]*registrytest.Key{}}, Token: token}
	v.Server = httptest.NewServer(http.HandlerFunc(v.serve))
	return v
}

func (v *Vault) serve(w http.ResponseWriter, r *http.Request) {
	v.requests.Add(1)
	name, ok := strings.CutPrefix(r.URL.Path, "/v1/transit/keys/")
	if !ok || r.Method != http.MethodGet {
		http.Error(w, `{"errors":["unsupported path"]}`, http.StatusNotFound)
		return
	}
	if r.Header.Get("X-Vault-Token") != v.Token {
		http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
		return
	}
	k, ok, failing := v.lookup(name)
	switch {
	case failing:
		http.Error(w, `{"errors":["the fake Vault is sealed"]}`, http.StatusServiceUnavailable)
		return
	case !ok:
		http.Error(w, `{"errors":[]}`, http.StatusNotFound)
		return
	}
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der(k)}))
	sum := sha256.Sum256(der(k))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
		"name": name, "type": "ecdsa-p256", "latest_version": 1, "min_decryption_version": 1,
		"keys": map[string]any{"1": map[string]any{"name": "P-256", "public_key": pub, "creation_time": time.Now().Format(time.RFC3339), "fingerprint": fmt.Sprintf("%x", sum[:8])}},
	}})
}

// TB is what Environment needs of a test.
type TB interface {
	Helper()
	Setenv(key, value string)
	TempDir() string
}

// Environment points this process's AWS SDK at the fake only, for the test: KMS, ECR and STS
// at its URL, no shared config files, no instance metadata, no ECR file cache, and, when
// static, the access key it accepts (otherwise none: a web identity must supply one).
func (a *AWS) Environment(t TB, static bool) {
	t.Helper()
	keyID, secret := "", ""
	if static {
		keyID, secret = a.AccessKeyID, "secret"
	}
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_KMS": a.URL, "AWS_ENDPOINT_URL_ECR": a.URL, "AWS_ENDPOINT_URL_STS": a.URL, "AWS_REGION": "us-east-1",
		"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ECR_DISABLE_CACHE": "true",
		"AWS_ACCESS_KEY_ID": keyID, "AWS_SECRET_ACCESS_KEY": secret, "AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "",
	} {
		t.Setenv(k, v)
	}
}
