package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/reference"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	kjson "sigs.k8s.io/json"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// FuzzPodHandler feeds arbitrary bytes to the whole Pod webhook handler (decoding included)
// and checks that it always answers a well-formed AdmissionReview, and never admits the
// CREATE of a Pod with an image outside ghcr.io/acme/, the only registry its policy allows.
func FuzzPodHandler(f *testing.F) {
	for _, seed := range [][]byte{
		podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/app:1"), ""),
		podReview("CREATE", "pods", "", "1", podJSON("quay.io/x/y:1", "nginx"), ""),
		// Found by CI's fuzzing: the repository ghcr.io/acme itself, host in mixed case.
		podReview("CREATE", "pods", "", "1", podJSON("ghCr.io/acme", "ghcr.io/acmeevil/x"), ""),
		podReview("UPDATE", "pods", "", "1", podJSON("ghcr.io/acme/app:2"), podJSON("ghcr.io/acme/app:1")),
		podReview("UPDATE", "pods", "ephemeralcontainers", "1", podJSON("ghcr.io/acme/app:1"), podJSON("ghcr.io/acme/app:1")),
		podReview("CREATE", "pods", "", "1", `{"apiVersion":"v1","kind":"Pod","spec":{"initContainers":[{"name":"i","image":"GHCR.IO/acme/x"}],"volumes":[{"name":"v","image":{"reference":"ghcr.io/acme/v:1"}}]}}`, ""),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`),
		[]byte("{"),
	} {
		f.Add(seed)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		f.Fatal(err)
	}
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "trusted"},
		Spec:       imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}}},
	}}, nil)
	handler := &ctrlwebhook.Admission{Handler: NewPodValidator(fixedSnapshot{snap}, fake.NewClientBuilder().WithScheme(scheme).Build(), nil)}

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, PodWebhookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("not a well-formed AdmissionReview answer: %q (%v)", rec.Body.String(), err)
		}
		if !out.Response.Allowed {
			return
		}
		// Admitted: if this was a Pod CREATE, every image must be in ghcr.io/acme/.
		var in admissionv1.AdmissionReview
		// Decoded as the handler decodes: case-sensitive keys, the last duplicate wins.
		if kjson.UnmarshalCaseSensitivePreserveInts(body, &in) != nil || in.Request == nil || in.Request.Operation != admissionv1.Create {
			return
		}
		var pod corev1.Pod
		if kjson.UnmarshalCaseSensitivePreserveInts(in.Request.Object.Raw, &pod) != nil {
			return
		}
		for _, img := range podspec.PodImages(&pod.Spec, "spec") {
			// The oracle parses on its own: the repository must be ghcr.io/acme or under
			// it (`**` matches zero or more segments; registry hosts are case-insensitive).
			named, err := reference.ParseNormalizedNamed(img.Ref)
			if err != nil {
				t.Fatalf("admitted %s = %q, which does not parse (%v): %s", img.Field, img.Ref, err, body)
			}
			repo := strings.ToLower(reference.Domain(named)) + "/" + reference.Path(named)
			if repo != "ghcr.io/acme" && !strings.HasPrefix(repo, "ghcr.io/acme/") {
				t.Fatalf("admitted %s = %q (repository %s): %s", img.Field, img.Ref, repo, body)
			}
		}
	})
}
