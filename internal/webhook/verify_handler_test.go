package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	admissionv1 "k8s.io/api/admission/v1"
	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// keySnapshot holds one ClusterImagePolicy, "signed", whose verify rule trusts key alone (no
// transparency log), for the Pods podSelector picks (nil: every Pod).
func keySnapshot(key *registrytest.Key, podSelector *metav1.LabelSelector) *policy.Snapshot {
	return policy.CompileWith([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "signed", UID: "u", Generation: 1},
		Spec: imagegatev1alpha1.ImagePolicySpec{
			PodSelector: podSelector,
			Verify: imagegatev1alpha1.VerifyRules{
				Signers:         []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
				TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
			},
		},
	}}, nil, policy.Options{Trust: verify.Compiler(&verify.NamespaceSources{})})
}

// signedRegistry starts a registry, closed with the test, holding acme/app:1 signed by a new
// key and unsignedRepo:unsignedTag unsigned.
func signedRegistry(t *testing.T, unsignedRepo, unsignedTag string) (reg *registrytest.Registry, key *registrytest.Key, signed, unsigned name.Digest) {
	t.Helper()
	reg = registrytest.New(true)
	t.Cleanup(reg.Close)
	key, err := registrytest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if signed, err = reg.Push("acme/app", "1"); err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(signed); err != nil {
		t.Fatal(err)
	}
	if unsigned, err = reg.Push(unsignedRepo, unsignedTag); err != nil {
		t.Fatal(err)
	}
	return reg, key, signed, unsigned
}

// The ImageReview endpoint applies verify rules through the same decider: a digest is
// verified in the registry; a tag is refused, since the plugin cannot pin it.
func TestImageReviewVerifies(t *testing.T) {
	reg, key, signed, unsigned := signedRegistry(t, "acme/tool", "1")
	snap := keySnapshot(key, nil)
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

// The pinning webhook rewrites only the images a request sets: a CREATE's, and on UPDATE the
// new or changed ones. An image an UPDATE leaves alone is never rewritten (a new image string
// would restart the running container).
func TestPinOnlyWhatTheRequestSets(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"acme/app", "acme/next"} {
		if _, err := reg.Push(repo, "1"); err != nil {
			t.Fatal(err)
		}
	}
	snap := keySnapshot(key, &metav1.LabelSelector{MatchLabels: map[string]string{"signed": "yes"}})
	labelled := func(images ...string) string {
		return strings.Replace(podJSON(images...), `"namespace":"team-a"}`, `"namespace":"team-a","labels":{"signed":"yes"}}`, 1)
	}
	pinner := &ctrlwebhook.Admission{Handler: NewPodPinner(fixedSnapshot{snap}, nil, nil, verify.New(verify.Options{}))}
	app, next := reg.Host+"/acme/app:1", reg.Host+"/acme/next:1"
	for _, c := range []struct {
		name, op, object, old string
		want                  []string // patched paths
	}{
		{"create", "CREATE", labelled(app, next), "", []string{"/spec/containers/0/image", "/spec/containers/1/image"}},
		{"update of one image", "UPDATE", labelled(app, next), labelled(app, "ghcr.io/acme/old:1"), []string{"/spec/containers/1/image"}},
		// The validating webhook refuses this one (unpinned images under a policy the Pod
		// was just relabelled into); the running containers are never rewritten.
		{"relabel into the policy", "UPDATE", labelled(app, next), podJSON(app, next), nil},
	} {
		req := httptest.NewRequest(http.MethodPost, PinWebhookPath, bytes.NewReader(podReview(c.op, "pods", "", "1", c.object, c.old)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		pinner.ServeHTTP(rec, req)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var ops []struct{ Path string }
		if len(review.Response.Patch) > 0 {
			if err := json.Unmarshal(review.Response.Patch, &ops); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		var got []string
		for _, op := range ops {
			got = append(got, op.Path)
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") || !review.Response.Allowed {
			t.Errorf("%s: allowed=%v patched %v, want %v (%s)", c.name, review.Response.Allowed, got, c.want, review.Response.Result)
		}
	}
}

// The apiserver does not send the pinning webhook a Pod whose every image holds "@" (the
// matchCondition image-without-digest, config/webhook/pin_scope_patch.yaml). Writing "@" must
// not be a way past a verify rule: what is not a valid digest reference is refused, and a
// valid one is verified at its digest, whatever tag it also names.
func TestDigestLookalikesAreRefused(t *testing.T) {
	reg, key, signed, unsigned := signedRegistry(t, "acme/app", "2")
	snap := keySnapshot(key, nil)
	v := newTestValidator(t, snap)
	v.SetVerifier(verify.New(verify.Options{}))
	repo := reg.Host + "/acme/app"
	for _, c := range []struct {
		image  string
		reason string // "" admitted
	}{
		{repo + ":1@" + signed.DigestStr(), ""},
		{repo + ":2@" + signed.DigestStr(), ""}, // the digest decides, as in the runtime
		{repo + ":1@" + unsigned.DigestStr(), "no signature by a trusted signer"},
		{repo + "@sha256:1234", "it is not a valid image reference"},
		{repo + ":1@", "it is not a valid image reference"},
		{repo + ":1@latest", "it is not a valid image reference"},
		{repo + "@@" + signed.DigestStr(), "it is not a valid image reference"},
		{"@" + repo + ":1", "it is not a valid image reference"},
	} {
		if !strings.Contains(c.image, "@") {
			t.Fatalf("%s: the case must hold @, or the pin webhook would see it", c.image)
		}
		resp := v.Handle(context.Background(), request(admissionv1.Create, "pods", "", podJSON(c.image), ""))
		got := ""
		if resp.Result != nil {
			got = resp.Result.Message
		}
		if resp.Allowed != (c.reason == "") || !strings.Contains(got, c.reason) {
			t.Errorf("%s: allowed=%v %q; want reason %q", c.image, resp.Allowed, got, c.reason)
		}
	}
}
