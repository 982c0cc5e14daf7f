package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
)

// ImageReviewPath is where the manager answers the kube-apiserver's ImagePolicyWebhook
// admission plugin.
const ImageReviewPath = "/imagereview"

// DecisionNotCovered is the decision audit annotation of a review in an excluded namespace.
const DecisionNotCovered = "not-covered"

// maxImageReviewBytes bounds a request body, as the apiserver bounds its own requests.
const maxImageReviewBytes = 3 << 20

var imageReviewGVK = imagepolicyv1alpha1.SchemeGroupVersion.WithKind("ImageReview")

// ImageReviewHandler serves imagepolicy.k8s.io/v1alpha1 ImageReviews from the same snapshot
// as the Pod webhook, so clusters that use the in-tree ImagePolicyWebhook plugin enforce the
// same ImagePolicies.
//
// The plugin sends only the namespace, the images (containers and init containers, or the
// ephemeral containers of a kubectl debug) and the Pod annotations whose keys contain
// `.image-policy.k8s.io/`. So namespaceSelector works (labels from the informer cache), a
// podSelector cannot be evaluated and the policy is applied to every Pod it may cover, image
// volumes are not checked, and an UPDATE is judged on all its images.
type ImageReviewHandler struct {
	decider
	excluded map[string]bool
}

// NewImageReviewHandler returns the handler; namespaces reads Namespace metadata (the
// manager's cache). Reviews of Pods in the excluded namespaces are allowed without a
// decision: the plugin, unlike a webhook configuration, cannot leave namespaces out, and a
// cluster must be able to restart imagegate and its own system Pods.
func NewImageReviewHandler(snapshots policy.Source, namespaces client.Reader, excluded []string, recorder *telemetry.Recorder) *ImageReviewHandler {
	h := &ImageReviewHandler{
		decider:  decider{snapshots: snapshots, namespaces: namespaces, recorder: recorder, endpoint: telemetry.EndpointImageReview},
		excluded: map[string]bool{},
	}
	for _, ns := range excluded {
		h.excluded[ns] = true
	}
	return h
}

func (h *ImageReviewHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "imagegate answers ImageReviews with POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		http.Error(w, fmt.Sprintf("content type %q: imagegate reads application/json", ct), http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxImageReviewBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("the ImageReview is larger than %d bytes", maxImageReviewBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the ImageReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	review := &imagepolicyv1alpha1.ImageReview{}
	if err := json.Unmarshal(body, review); err != nil {
		http.Error(w, "decoding the ImageReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if gvk := review.GroupVersionKind(); gvk != imageReviewGVK {
		http.Error(w, fmt.Sprintf("imagegate answers %s, not %q", imageReviewGVK.GroupVersion().String()+" ImageReview", gvkString(gvk)), http.StatusBadRequest)
		return
	}
	review.Status = h.Review(r.Context(), &review.Spec)
	out, err := json.Marshal(review)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Review decides one ImageReview spec.
func (h *ImageReviewHandler) Review(ctx context.Context, spec *imagepolicyv1alpha1.ImageReviewSpec) imagepolicyv1alpha1.ImageReviewStatus {
	if h.excluded[spec.Namespace] {
		return imagepolicyv1alpha1.ImageReviewStatus{Allowed: true, AuditAnnotations: map[string]string{policy.AnnotationDecision: DecisionNotCovered}}
	}
	images := make([]policy.Image, len(spec.Containers))
	for i := range spec.Containers {
		images[i] = policy.Image{Field: "ImageReview spec.containers[" + strconv.Itoa(i) + "].image", Ref: spec.Containers[i].Image}
	}
	// The plugin sends no Pod labels: a policy with a podSelector applies (see Subject).
	sub := policy.Subject{
		Namespace: spec.Namespace, PodLabelsUnknown: true, Images: images,
		BreakGlass: policy.BreakGlassRequested(spec.Annotations),
	}
	d, ok := h.decide(ctx, &sub, telemetry.Object{Kind: "Pod", Namespace: spec.Namespace}, nil)
	if !ok {
		return imagepolicyv1alpha1.ImageReviewStatus{Reason: notLoaded}
	}
	status := imagepolicyv1alpha1.ImageReviewStatus{Allowed: d.Allowed(), AuditAnnotations: d.AuditAnnotations()}
	if !status.Allowed {
		status.Reason = d.DenialMessage()
	}
	return status
}

func gvkString(gvk schema.GroupVersionKind) string {
	if gvk.Empty() {
		return "an object without apiVersion and kind"
	}
	return gvk.GroupVersion().String() + " " + gvk.Kind
}

// SetupImageReviewWithManager serves ImageReviews at ImageReviewPath on the manager's
// webhook server (same port, TLS and certificate as the Pod webhook).
func SetupImageReviewWithManager(mgr ctrl.Manager, snapshots policy.Source, excluded []string, recorder *telemetry.Recorder, v verify.Checker) {
	h := NewImageReviewHandler(snapshots, mgr.GetCache(), excluded, recorder)
	h.SetVerifier(v)
	register(mgr.GetWebhookServer(), ImageReviewPath, h)
}
