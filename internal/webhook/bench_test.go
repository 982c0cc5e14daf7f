package webhook

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/prometheus/client_golang/prometheus"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// BenchmarkPodHandler is one admitted 3-container Pod CREATE through the whole HTTP handler
// (decoding, evaluation, metrics, encoding), beside a handler that admits without looking:
// the difference is what imagegate costs a webhook server per review.
//
// The verify cases: the same Pod pinned by digest, without and with a verify rule that covers
// its images (the verifier's cache warm, as for every Pod of a Deployment after the first),
// and the mutating webhook that pins tags, without and with a verify rule (tag cache warm).
func BenchmarkPodHandler(b *testing.B) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "trusted"},
		Spec: imagegatev1alpha1.ImagePolicySpec{
			Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}},
			Tags:   imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}},
		},
	}}, nil)
	metrics, err := telemetry.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	body := podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/web:1.4.2", "ghcr.io/acme/sidecar/proxy:2.0", "ghcr.io/acme/tools:3"), "")
	reader := fake.NewClientBuilder().WithScheme(scheme).Build()
	recorder := &telemetry.Recorder{Metrics: metrics}

	// A registry with three signed images, and the policies that verify them.
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	var tagged, pinned []string
	for _, repo := range []string{"acme/web", "acme/sidecar/proxy", "acme/tools"} {
		d, err := reg.Push(repo, "1")
		if err != nil {
			b.Fatal(err)
		}
		if err := key.Sign(d); err != nil {
			b.Fatal(err)
		}
		tagged = append(tagged, reg.Host+"/"+repo+":1")
		pinned = append(pinned, reg.Host+"/"+repo+":1@"+d.DigestStr())
	}
	allowLocal := imagegatev1alpha1.ImagePolicySpec{
		Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{imagegatev1alpha1.ImagePattern(reg.Host + "/acme/**")}},
		Tags:   imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}},
	}
	names := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{{ObjectMeta: metav1.ObjectMeta{Name: "trusted"}, Spec: allowLocal}}, nil)
	verifying := policy.CompileWith([]imagegatev1alpha1.ClusterImagePolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "trusted"}, Spec: allowLocal},
		{ObjectMeta: metav1.ObjectMeta{Name: "signed", UID: "u", Generation: 1}, Spec: imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Signers:         []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
		}}},
	}, nil, policy.Options{Trust: verify.Compiler(verify.NamespaceSources{Reader: reader, Namespace: "imagegate-system"})})
	if e := verifying.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "signed"}); e != "" {
		b.Fatal(e)
	}
	verifier := verify.New(verify.Options{})
	defer verifier.Close()
	validator := func(snap *policy.Snapshot) admission.Handler {
		v := NewPodValidator(fixedSnapshot{snap}, reader, recorder)
		v.SetVerifier(verifier)
		return v
	}
	pinnedBody := podReview("CREATE", "pods", "", "1", podJSON(pinned...), "")
	taggedBody := podReview("CREATE", "pods", "", "1", podJSON(tagged...), "")

	for _, tc := range []struct {
		name    string
		handler admission.Handler
		body    []byte
		want    string
	}{
		{"no-op", admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") }), body, `"allowed":true`},
		{"imagegate", NewPodValidator(fixedSnapshot{snap}, reader, recorder), body, `"allowed":true`},
		{"imagegate/pinned/no-verify-rule", validator(names), pinnedBody, `"allowed":true`},
		{"imagegate/pinned/verify-rule-warm", validator(verifying), pinnedBody, `"allowed":true`},
		{"pin/no-verify-rule", NewPodPinner(fixedSnapshot{names}, reader, recorder, verifier), taggedBody, `"allowed":true`},
		{"pin/verify-rule-warm", NewPodPinner(fixedSnapshot{verifying}, reader, recorder, verifier), taggedBody, `"patch":`},
	} {
		body := tc.body
		b.Run(tc.name, func(b *testing.B) {
			h := &ctrlwebhook.Admission{Handler: tc.handler}
			// Warm the caches, and check the answer once more than the loop does.
			req := httptest.NewRequest(http.MethodPost, PodWebhookPath, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if !bytes.Contains(rec.Body.Bytes(), []byte(tc.want)) {
				b.Fatal(rec.Body.String())
			}
			requests := reg.Requests()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, PodWebhookPath, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if !bytes.Contains(rec.Body.Bytes(), []byte(`"allowed":true`)) {
					b.Fatal(rec.Body.String())
				}
			}
			b.ReportMetric(float64(reg.Requests()-requests)/float64(b.N), "registry-requests/op")
		})
	}
}
