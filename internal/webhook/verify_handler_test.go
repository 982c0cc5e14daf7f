package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// The ImageReview endpoint applies verify rules through the same decider: a digest is
// verified in the registry; a tag is refused, since the plugin cannot pin it.
func TestImageReviewVerifies(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := reg.Push("acme/app", "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := key.SignBundle(signed, registrytest.Statement(signed, ctypes.CosignSignPredicateType)); err != nil {
		t.Fatal(err)
	}
	unsigned, err := reg.Push("acme/tool", "1")
	if err != nil {
		t.Fatal(err)
	}
	snap := policy.CompileWith([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "signed", UID: "u", Generation: 1},
		Spec: imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Signers:         []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
		}},
	}}, nil, policy.Options{Trust: verify.Compiler(&verify.NamespaceSources{})})
	h := reviewHandler(t, snap)
	h.SetVerifier(verify.New(verify.Options{}))
	for _, c := range []struct {
		image  string
		reason string // "" allowed
	}{
		{signed.String(), ""},
		{unsigned.String(), `no signature by a trusted signer (tried: key "release"; found no signature`},
		{reg.Host + "/acme/app:1", "it is not pinned by digest, and verify rules check digests"},
	} {
		rec := postReview(t, h, http.MethodPost, "application/json", reviewJSON("team-a", nil, c.image))
		var out imagepolicyv1alpha1.ImageReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s: %v: %s", c.image, err, rec.Body.String())
		}
		if out.Status.Allowed != (c.reason == "") || !strings.Contains(out.Status.Reason, c.reason) {
			t.Errorf("%s: allowed=%v reason %q; want reason %q", c.image, out.Status.Allowed, out.Status.Reason, c.reason)
		}
	}
}
