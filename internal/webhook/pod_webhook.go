// Package webhook adapts the policy engine to Kubernetes admission: it turns a Pod
// AdmissionReview into a policy.Subject, asks the engine, and turns the Decision into the
// response. It holds no rules of its own.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
)

// PodWebhookPath is where the Pod webhook is served.
const PodWebhookPath = "/validate-v1-pod"

// errNoUID answers an AdmissionReview without request.uid, which the apiserver always sets
// and checks in the response.
var errNoUID = errors.New("the AdmissionReview has no request.uid")

// PodValidator decides Pod CREATE and UPDATE requests, including the
// pods/ephemeralcontainers subresource that `kubectl debug` writes. It is a raw
// admission.Handler because the typed Validator sees neither the subresource nor what the
// apiserver sends as oldObject for it.
type PodValidator struct {
	decider
}

// NewPodValidator returns a PodValidator that takes policies from snapshots and namespace
// labels from namespaces (the manager's cache: no apiserver call per request).
func NewPodValidator(snapshots policy.Source, namespaces client.Reader, recorder *telemetry.Recorder) *PodValidator {
	return &PodValidator{
		decider: decider{snapshots: snapshots, namespaces: namespaces, recorder: recorder, endpoint: telemetry.EndpointPod},
	}
}

// +kubebuilder:webhook:path=/validate-v1-pod,mutating=false,failurePolicy=fail,sideEffects=None,groups="",resources=pods;pods/ephemeralcontainers,verbs=create;update,versions=v1,name=pods.imagegate.io,admissionReviewVersions=v1,matchPolicy=Equivalent,timeoutSeconds=15
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupPodWebhookWithManager registers the Pod webhook on the manager's webhook server.
func SetupPodWebhookWithManager(mgr ctrl.Manager, snapshots policy.Source, recorder *telemetry.Recorder, v verify.Checker, pc *verify.PodCredentials) {
	h := NewPodValidator(snapshots, mgr.GetCache(), recorder)
	h.SetVerifier(v)
	h.SetPodCredentials(pc)
	register(mgr.GetWebhookServer(), PodWebhookPath, &ctrlwebhook.Admission{LogConstructor: requestLogger, Handler: h})
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Handle decides one request.
func (v *PodValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Resource != podResource || (req.SubResource != "" && req.SubResource != "ephemeralcontainers") {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("imagegate checks pods and pods/ephemeralcontainers, not %s", resourceName(req)))
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("imagegate checks CREATE and UPDATE, not %s", req.Operation))
	}
	if req.UID == "" {
		return admission.Errored(http.StatusBadRequest, errNoUID)
	}
	pod, sub, errResp := podSubject(req)
	if errResp != nil {
		return *errResp
	}
	namespace := sub.Namespace
	d, ok := v.decide(ctx, &sub, telemetry.Object{Kind: "Pod", Namespace: namespace, Name: pod.Name, GenerateName: pod.GenerateName, DryRun: ptr.Deref(req.DryRun, false)}, pod)
	if !ok {
		return admission.Denied(notLoaded)
	}
	return admissionResponse(&d)
}

// podSubject decodes a Pod request into the Subject the engine decides, as both Pod webhooks
// (validating and pinning) must read it alike: the namespace of the request (or of the
// object), the labels, every image, break-glass, and for an UPDATE what it changes.
func podSubject(req admission.Request) (*corev1.Pod, policy.Subject, *admission.Response) {
	pod := &corev1.Pod{}
	if err := podspec.DecodePod(req.Object.Raw, pod); err != nil {
		r := admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the Pod: %w", err))
		return nil, policy.Subject{}, &r
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	sub := policy.Subject{
		Namespace: namespace, PodLabels: pod.Labels, Images: podspec.PodImages(&pod.Spec, "spec"),
		BreakGlass: policy.BreakGlassRequested(pod.Annotations),
	}
	if req.Operation == admissionv1.Update {
		old := &corev1.Pod{}
		if err := podspec.DecodePod(req.OldObject.Raw, old); err != nil {
			r := admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the old Pod: %w", err))
			return nil, policy.Subject{}, &r
		}
		sub.Updated(podspec.PodImages(&old.Spec, "spec"), old.Labels)
	}
	return pod, sub, nil
}

func resourceName(req admission.Request) string {
	r := req.Resource.Resource
	if req.Resource.Group != "" {
		r += "." + req.Resource.Group
	}
	if req.SubResource != "" {
		r += "/" + req.SubResource
	}
	return r
}
