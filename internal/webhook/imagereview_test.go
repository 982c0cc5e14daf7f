package webhook

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

func reviewHandler(t *testing.T, snap *policy.Snapshot) *ImageReviewHandler {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	prod := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "production", "kubernetes.io/metadata.name": "prod"}}}
	teamA := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"kubernetes.io/metadata.name": "team-a"}}}
	return NewImageReviewHandler(fixedSnapshot{snap}, fake.NewClientBuilder().WithScheme(scheme).WithObjects(prod, teamA).Build(), []string{"kube-system"}, nil)
}

func reviewPolicies() *policy.Snapshot {
	cp := func(name string, spec imagegatev1alpha1.ImagePolicySpec) imagegatev1alpha1.ClusterImagePolicy {
		return imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	return policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{
		cp("trusted", imagegatev1alpha1.ImagePolicySpec{AllowBreakGlass: ptr.To(true), Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}}}),
		cp("no-latest", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeWarn, Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}}),
		cp("prod-digests", imagegatev1alpha1.ImagePolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "production"}},
			RequireDigest:     ptr.To(true),
		}),
		cp("web-pinned", imagegatev1alpha1.ImagePolicySpec{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Images:      imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/legacy/**"}},
		}),
	}, nil)
}

func postReview(t *testing.T, h http.Handler, method, contentType, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, ImageReviewPath, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func reviewJSON(namespace string, annotations map[string]string, images ...string) string {
	r := imagepolicyv1alpha1.ImageReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "imagepolicy.k8s.io/v1alpha1", Kind: "ImageReview"},
		Spec:     imagepolicyv1alpha1.ImageReviewSpec{Namespace: namespace, Annotations: annotations},
	}
	for _, img := range images {
		r.Spec.Containers = append(r.Spec.Containers, imagepolicyv1alpha1.ImageReviewContainerSpec{Image: img})
	}
	b, _ := json.Marshal(r)
	return string(b)
}

func TestImageReviewDecisions(t *testing.T) {
	h := reviewHandler(t, reviewPolicies())
	const idReason = "it could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)"
	for _, tc := range []struct {
		name        string
		review      string
		allowed     bool
		reason      string
		annotations map[string]string
	}{
		{
			name:    "allowed images",
			review:  reviewJSON("team-a", nil, "ghcr.io/acme/web:1", "ghcr.io/acme/init:2"),
			allowed: true, annotations: map[string]string{"decision": "allowed"},
		},
		{
			name:        "one image denied, with the webhook's wording and the review's field",
			review:      reviewJSON("team-a", nil, "ghcr.io/acme/web:1", "quay.io/evil/x:1"),
			reason:      `ImageReview spec.containers[1].image: image "quay.io/evil/x:1" is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/trusted"},
		},
		{
			name:    "a Warn policy cannot warn through the plugin: only the audit annotation records it",
			review:  reviewJSON("team-a", nil, "ghcr.io/acme/web:latest"),
			allowed: true, annotations: map[string]string{"decision": "allowed-with-warnings", "policies": "Warn:ClusterImagePolicy/no-latest"},
		},
		{
			name:        "namespaceSelector works, with the labels from the cache",
			review:      reviewJSON("prod", nil, "ghcr.io/acme/web:1"),
			reason:      `ImageReview spec.containers[0].image: image "ghcr.io/acme/web:1" is not allowed by ClusterImagePolicy "prod-digests": it is not pinned by digest (@sha256:...) and requireDigest is set`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/prod-digests"},
		},
		{
			name:        "a namespace missing from the cache is refused, not guessed",
			review:      reviewJSON("new-ns", nil, "ghcr.io/acme/web:1"),
			reason:      `metadata.namespace: the Pod is not allowed by ClusterImagePolicy "prod-digests": the labels of namespace "new-ns" are not known yet, so whether the policy applies cannot be told; retry`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/prod-digests"},
		},
		{
			name:        "a podSelector cannot be evaluated without labels: the policy applies",
			review:      reviewJSON("team-a", nil, "ghcr.io/acme/legacy/db:9"),
			reason:      `ImageReview spec.containers[0].image: image "ghcr.io/acme/legacy/db:9" is not allowed by ClusterImagePolicy "web-pinned": it matches images.deny[0] "ghcr.io/acme/legacy/**"`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/web-pinned"},
		},
		{
			name:        "break-glass admits through a policy that allows it, and records it",
			review:      reviewJSON("team-a", map[string]string{"alpha.image-policy.k8s.io/break-glass": "true"}, "quay.io/evil/x:1"),
			allowed:     true,
			annotations: map[string]string{"decision": "allowed-by-break-glass", "policies": "Warn:ClusterImagePolicy/trusted", "break-glass": "ClusterImagePolicy/trusted"},
		},
		{
			name:        "break-glass does not open a policy that does not allow it",
			review:      reviewJSON("team-a", map[string]string{"alpha.image-policy.k8s.io/break-glass": "true"}, "ghcr.io/acme/legacy/db:9"),
			reason:      `ImageReview spec.containers[0].image: image "ghcr.io/acme/legacy/db:9" is not allowed by ClusterImagePolicy "web-pinned": it matches images.deny[0] "ghcr.io/acme/legacy/**"`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/web-pinned"},
		},
		{
			name:        "failed-open, set by a user, is not a pass",
			review:      reviewJSON("team-a", map[string]string{"alpha.image-policy.k8s.io/failed-open": "true"}, "quay.io/evil/x:1"),
			reason:      `ImageReview spec.containers[0].image: image "quay.io/evil/x:1" is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/trusted"},
		},
		{
			name:    "an excluded namespace is not covered, as the webhook's namespaceSelector leaves it out",
			review:  reviewJSON("kube-system", nil, "quay.io/evil/x:1"),
			allowed: true, annotations: map[string]string{"decision": "not-covered"},
		},
		{
			name:   "an image ID is refused through the plugin too",
			review: reviewJSON("team-a", nil, "sha256:4f1d"),
			reason: `ImageReview spec.containers[0].image: image "sha256:4f1d" is not allowed by ClusterImagePolicy "trusted": ` + idReason + "\n" +
				`ImageReview spec.containers[0].image: image "sha256:4f1d" is not allowed by ClusterImagePolicy "web-pinned": ` + idReason,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/trusted,Enforce:ClusterImagePolicy/web-pinned,Warn:ClusterImagePolicy/no-latest"},
		},
		{
			name:        "another spelling of the registry meets the same deny-list",
			review:      reviewJSON("team-a", nil, "ghcr.io:443/acme/legacy/db:9"),
			reason:      `ImageReview spec.containers[0].image: image "ghcr.io:443/acme/legacy/db:9" (ghcr.io/acme/legacy/db:9) is not allowed by ClusterImagePolicy "web-pinned": it matches images.deny[0] "ghcr.io/acme/legacy/**"`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/web-pinned"},
		},
		{
			name:   "a reason never carries a raw control character",
			review: reviewJSON("team-a", nil, "ghcr.io/acme/X\nNOTE: verified"),
			reason: `ImageReview spec.containers[0].image: image "ghcr.io/acme/X\nNOTE: verified" is not allowed by ClusterImagePolicy "trusted": it is not a valid image reference: invalid reference format: repository name (acme/X\nNOTE) must be lowercase` + "\n" +
				`ImageReview spec.containers[0].image: image "ghcr.io/acme/X\nNOTE: verified" is not allowed by ClusterImagePolicy "web-pinned": it is not a valid image reference: invalid reference format: repository name (acme/X\nNOTE) must be lowercase`,
			annotations: map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/trusted,Enforce:ClusterImagePolicy/web-pinned,Warn:ClusterImagePolicy/no-latest"},
		},
		{
			name:    "no containers: nothing to decide",
			review:  reviewJSON("team-a", nil),
			allowed: true, annotations: map[string]string{"decision": "allowed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			rec := postReview(t, h, http.MethodPost, "application/json", tc.review)
			g.Expect(rec.Code).To(Equal(http.StatusOK), rec.Body.String())
			var out imagepolicyv1alpha1.ImageReview
			g.Expect(json.Unmarshal(rec.Body.Bytes(), &out)).To(Succeed())
			g.Expect(out.Kind).To(Equal("ImageReview"))
			g.Expect(out.Status.Allowed).To(Equal(tc.allowed))
			g.Expect(out.Status.Reason).To(Equal(tc.reason))
			g.Expect(out.Status.AuditAnnotations).To(Equal(tc.annotations))
		})
	}
}

func TestImageReviewBadRequests(t *testing.T) {
	h := reviewHandler(t, reviewPolicies())
	for _, tc := range []struct {
		name, method, contentType, body string
		code                            int
		msg                             string
	}{
		{"GET", http.MethodGet, "", "", http.StatusMethodNotAllowed, "imagegate answers ImageReviews with POST"},
		{"wrong content type", http.MethodPost, "application/yaml", reviewJSON("a", nil, "x"), http.StatusUnsupportedMediaType, `content type "application/yaml"`},
		{"empty body", http.MethodPost, "application/json", "", http.StatusBadRequest, "decoding the ImageReview: unexpected end of JSON input"},
		{"not JSON", http.MethodPost, "application/json", "{nope", http.StatusBadRequest, "decoding the ImageReview"},
		{"no kind", http.MethodPost, "application/json", `{"spec":{}}`, http.StatusBadRequest, "not \"an object without apiVersion and kind\""},
		{"an AdmissionReview", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest, `not "admission.k8s.io/v1 AdmissionReview"`},
		{"too large", http.MethodPost, "application/json", `{"spec":{"containers":[{"image":"` + strings.Repeat("a", maxImageReviewBytes) + `"}]}}`, http.StatusRequestEntityTooLarge, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := postReview(t, h, tc.method, tc.contentType, tc.body)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.msg) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.code, tc.msg)
			}
		})
	}
}

func TestImageReviewBeforePoliciesLoad(t *testing.T) {
	rec := postReview(t, reviewHandler(t, nil), http.MethodPost, "application/json", reviewJSON("a", nil, "nginx"))
	var out imagepolicyv1alpha1.ImageReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Status.Allowed || !strings.Contains(out.Status.Reason, "not loaded its policies yet") {
		t.Errorf("got %+v", out.Status)
	}
}
