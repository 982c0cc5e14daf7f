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
)

// BenchmarkPodHandler is one admitted 3-container Pod CREATE through the whole HTTP handler
// (decoding, evaluation, metrics, encoding), beside a handler that admits without looking:
// the difference is what imagegate costs a webhook server per review.
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
	for _, tc := range []struct {
		name    string
		handler admission.Handler
	}{
		{"no-op", admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })},
		{"imagegate", NewPodValidator(fixedSnapshot{snap}, fake.NewClientBuilder().WithScheme(scheme).Build(), &telemetry.Recorder{Metrics: metrics})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := &ctrlwebhook.Admission{Handler: tc.handler}
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
		})
	}
}
