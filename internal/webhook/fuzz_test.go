package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	"github.com/imagegate/imagegate/test/utils/runtimeref"
)

// FuzzPodHandler feeds arbitrary bytes to the whole Pod webhook handler (decoding included)
// and checks that it always answers a well-formed AdmissionReview, that every denial line is
// printable, and that what it admits breaks no policy by the runtime's own reading of each
// image (test/utils/runtimeref: image IDs, endpoints, Docker Hub's names):
//   - "trusted" allows only repositories under ghcr.io/acme, and refuses image IDs;
//   - "no-evil" denies ghcr.io/acme/evil/**, however the registry is spelled;
//   - "payments" allows only ghcr.io/acme/payments/** for Pods labelled app=payments, so an
//     admitted UPDATE that moved a Pod into that label has every image there.
func FuzzPodHandler(f *testing.F) {
	for _, seed := range [][]byte{
		podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/app:1"), ""),
		podReview("CREATE", "pods", "", "1", podJSON("quay.io/x/y:1", "nginx"), ""),
		// Found by CI's fuzzing: the repository ghcr.io/acme itself, host in mixed case.
		podReview("CREATE", "pods", "", "1", podJSON("ghCr.io/acme", "ghcr.io/acmeevil/x"), ""),
		podReview("CREATE", "pods", "", "1", podJSON("ghcr.io:443/acme/evil/x:1", "GHCR.IO:0443/acme/evil/y"), ""),
		podReview("CREATE", "pods", "", "1", podJSON("sha256:4f1d", "ghcr.io/acme/app@"+strings.Repeat("sha256:", 1)+strings.Repeat("a", 64)), ""),
		podReview("CREATE", "pods", "", "1", podJSON("evil.io/X\n\nNOTE all good"), ""),
		podReview("UPDATE", "pods", "", "1", podJSON("ghcr.io/acme/app:2"), podJSON("ghcr.io/acme/app:1")),
		podReview("UPDATE", "pods", "", "1", labelled(podJSON("ghcr.io/acme/app:1"), "payments"), labelled(podJSON("ghcr.io/acme/app:1"), "tmp")),
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
	spec := func(allow ...imagegatev1alpha1.ImagePattern) imagegatev1alpha1.ImagePolicySpec {
		return imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: allow}}
	}
	payments := spec("ghcr.io/acme/payments/**")
	payments.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "payments"}}
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "trusted"}, Spec: spec("ghcr.io/acme/**")},
		{ObjectMeta: metav1.ObjectMeta{Name: "no-evil"}, Spec: imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/evil/**"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "payments"}, Spec: payments},
	}, nil)
	handler := &ctrlwebhook.Admission{Handler: NewPodValidator(fixedSnapshot{snap}, fake.NewClientBuilder().WithScheme(scheme).Build(), nil)}

	under := func(repo, prefix string) bool { return repo == prefix || strings.HasPrefix(repo, prefix+"/") }
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
			if out.Response.Result != nil && out.Response.Result.Code == http.StatusForbidden {
				for line := range strings.SplitSeq(out.Response.Result.Message, "\n") {
					if policy.Printable(line) != line {
						t.Fatalf("denial line with characters that are not printable: %q", line)
					}
				}
			}
			return
		}
		// Admitted: decoded as the handler decodes (case-sensitive keys, the last duplicate
		// wins), every image the policies check must pass them as the runtime reads it.
		var in admissionv1.AdmissionReview
		if kjson.UnmarshalCaseSensitivePreserveInts(body, &in) != nil || in.Request == nil {
			return
		}
		var pod, old corev1.Pod
		if kjson.UnmarshalCaseSensitivePreserveInts(in.Request.Object.Raw, &pod) != nil {
			return
		}
		before := map[string]string{} // field -> image before an UPDATE
		switch in.Request.Operation {
		case admissionv1.Create:
		case admissionv1.Update:
			if kjson.UnmarshalCaseSensitivePreserveInts(in.Request.OldObject.Raw, &old) != nil {
				return
			}
			for _, img := range podspec.PodImages(&old.Spec, "spec") {
				before[img.Field] = img.Ref
			}
		default:
			return
		}
		paymentsNow := pod.Labels["app"] == "payments"
		// A policy that did not cover the Pod before (payments, when the UPDATE moved the Pod
		// into its label) judges every image; the others judge new or changed images only.
		movedIn := in.Request.Operation == admissionv1.Update && paymentsNow && old.Labels["app"] != "payments"
		for _, img := range podspec.PodImages(&pod.Spec, "spec") {
			prev, existed := before[img.Field]
			changed := !existed || prev != img.Ref
			if !changed && !movedIn {
				continue
			}
			view, err := runtimeref.View(img.Ref)
			if errors.Is(err, runtimeref.ErrUnreachable) {
				continue // nothing can be pulled
			}
			if err != nil {
				t.Fatalf("admitted %s = %q, which does not parse (%v): %s", img.Field, img.Ref, err, body)
			}
			if view.ImageID {
				t.Fatalf("admitted %s = %q, which the runtime may take as an image ID: %s", img.Field, img.Ref, body)
			}
			if changed && (view.Endpoint != "ghcr.io:443" || !under(view.Repository, "acme")) {
				t.Fatalf("admitted %s = %q (%s/%s), outside ghcr.io/acme: %s", img.Field, img.Ref, view.Endpoint, view.Repository, body)
			}
			if changed && view.Endpoint == "ghcr.io:443" && under(view.Repository, "acme/evil") {
				t.Fatalf("admitted %s = %q (%s), denied by no-evil: %s", img.Field, img.Ref, view.Repository, body)
			}
			if paymentsNow && (changed || movedIn) && (view.Endpoint != "ghcr.io:443" || !under(view.Repository, "acme/payments")) {
				t.Fatalf("admitted %s = %q (%s/%s) in a Pod labelled app=payments: %s", img.Field, img.Ref, view.Endpoint, view.Repository, body)
			}
		}
	})
}

// labelled sets the app label of a podJSON Pod.
func labelled(pod, app string) string {
	return strings.Replace(pod, `"metadata":{`, `"metadata":{"labels":{"app":"`+app+`"},`, 1)
}
