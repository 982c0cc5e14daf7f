package verify_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/cloudtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// toLocal sends the requests for one registry host to a local registry, as DNS would send
// an ECR host's to ECR.
type toLocal struct {
	host, local string
}

func (t toLocal) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == t.host {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host, req.Host = "http", t.local, t.local
	}
	return http.DefaultTransport.RoundTrip(req)
}

func TestCloudCredentialsPerPolicy(t *testing.T) {
	const ecrHost = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	aws := cloudtest.NewAWS("AKIAIMAGEGATEECR0002")
	t.Cleanup(aws.Close)
	aws.Environment(t, true)
	reg := registrytest.New(true)
	t.Cleanup(reg.Close)
	reg.RequireBasicAuth("AWS", cloudtest.ECRPassword)
	creds := registrytest.Basic("AWS", cloudtest.ECRPassword)
	key, _ := registrytest.NewKey()
	local, err := registrytest.PushTo(reg.Host, "acme/app", "1", creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(local, creds); err != nil {
		t.Fatal(err)
	}
	image, err := name.NewDigest(ecrHost + "/acme/app@" + local.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		cloud []v1alpha1.CloudCredentialProvider
		want  string
	}{
		{"the rule reads ECR with the manager's identity", []v1alpha1.CloudCredentialProvider{v1alpha1.CloudECR}, ""},
		{"another rule, without it, reads anonymously", nil, "UNAUTHORIZED: authentication required"},
		{"a rule naming another cloud gets nothing for ECR", []v1alpha1.CloudCredentialProvider{v1alpha1.CloudACR}, "UNAUTHORIZED: authentication required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip, CloudCredentials: c.cloud}
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("ecr", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
			v := verify.New(verify.Options{Transport: toLocal{host: ecrHost, local: reg.Host}})
			defer v.Close()
			got := messages(ptr(decide(t, snap, v, image.String())))
			t.Logf("refusals: %q", got)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
