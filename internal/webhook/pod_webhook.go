// Package v1alpha1 adapts the policy engine to Kubernetes admission: it turns a Pod
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
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
)

// PodWebhookPath is where the Pod webhook is served.
const PodWebhookPath = "/validate-v1-pod"

// errNoUID answers an AdmissionReview without request.uid, which the apiserver always sets
// and checks in the response.
var errNoUID = errors.New("the AdmissionReview has no request.uid")

// SnapshotSource gives the current compiled policies; nil until they are first loaded.
type SnapshotSource interface {
	Snapshot() *policy.Snapshot
}

// PodValidator decides Pod CREATE and UPDATE requests, including the
// pods/ephemeralcontainers subresource that `kubectl debug` writes. It is a raw
// admission.Handler because the typed Validator sees neither the subresource nor what the
// apiserver sends as oldObject for it.
type PodValidator struct {
	decider
}

// NewPodValidator returns a PodValidator that takes policies from snapshots and namespace
// labels from namespaces (the manager's cache: no apiserver call per request).
func NewPodValidator(snapshots SnapshotSource, namespaces client.Reader, recorder *telemetry.Recorder) *PodValidator {
	return &PodValidator{
		decider: decider{snapshots: snapshots, namespaces: namespaces, recorder: recorder, endpoint: telemetry.EndpointPod},
	}
}

// +kubebuilder:webhook:path=/validate-v1-pod,mutating=false,failurePolicy=fail,sideEffects=None,groups="",resources=pods;pods/ephemeralcontainers,verbs=create;update,versions=v1,name=pods.imagegate.io,admissionReviewVersions=v1,matchPolicy=Equivalent,timeoutSeconds=5
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupPodWebhookWithManager registers the Pod webhook on the manager's webhook server.
func SetupPodWebhookWithManager(mgr ctrl.Manager, snapshots SnapshotSource, recorder *telemetry.Recorder) {
	register(mgr.GetWebhookServer(), PodWebhookPath, &ctrlwebhook.Admission{
		LogConstructor: requestLogger,
		Handler:        NewPodValidator(snapshots, mgr.GetCache(), recorder),
	})
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
	pod := &corev1.Pod{}
	if err := decodePod(req.Object.Raw, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the Pod: %w", err))
	}
	images := policy.PodImages(&pod.Spec, "spec")
	if req.Operation == admissionv1.Update {
		old := &corev1.Pod{}
		if err := decodePod(req.OldObject.Raw, old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the old Pod: %w", err))
		}
		images = policy.ChangedImages(policy.PodImages(&old.Spec, "spec"), images)
	}

	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	sub := policy.Subject{Namespace: namespace, PodLabels: pod.Labels, Images: images, BreakGlass: policy.BreakGlassRequested(pod.Annotations)}
	d, ok := v.decide(ctx, &sub, telemetry.Object{Kind: "Pod", Namespace: namespace, Name: pod.Name, GenerateName: pod.GenerateName})
	if !ok {
		return admission.Denied(notLoaded)
	}
	return admissionResponse(&d)
}

// decodePod decodes, from a review, the part of a Pod that imagegate reads, in one pass
// with the JSON decoding the apiserver itself uses (keys match case-sensitively, the last of
// duplicate keys wins), so that the webhook reads the very images the apiserver stores.
// Skipping the rest of the Pod (resources, env, probes...) instead of building it, and
// controller-runtime's first pass that only looks for apiVersion and kind, is most of the
// handler's own time: the apiserver has decoded and validated the whole object already.
func decodePod(raw []byte, pod *corev1.Pod) error {
	if len(raw) == 0 {
		return errors.New("there is no content to decode")
	}
	var v podView
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &v); err != nil {
		return err
	}
	if v.APIVersion != "v1" || v.Kind != "Pod" {
		return fmt.Errorf("the object is apiVersion %q kind %q, not a v1 Pod", v.APIVersion, v.Kind)
	}
	pod.APIVersion, pod.Kind = v.APIVersion, v.Kind
	m := &v.Metadata
	pod.Name, pod.GenerateName, pod.Namespace, pod.Labels, pod.Annotations = m.Name, m.GenerateName, m.Namespace, m.Labels, m.Annotations
	spec := &pod.Spec
	spec.InitContainers = containers(v.Spec.InitContainers)
	spec.Containers = containers(v.Spec.Containers)
	if n := len(v.Spec.EphemeralContainers); n > 0 {
		spec.EphemeralContainers = make([]corev1.EphemeralContainer, n)
		for i, c := range v.Spec.EphemeralContainers {
			spec.EphemeralContainers[i].Name, spec.EphemeralContainers[i].Image = c.Name, c.Image
		}
	}
	if n := len(v.Spec.Volumes); n > 0 {
		spec.Volumes = make([]corev1.Volume, n)
		for i, vol := range v.Spec.Volumes {
			spec.Volumes[i].Name, spec.Volumes[i].Image = vol.Name, vol.Image
		}
	}
	return nil
}

// podView is what decodePod reads of a Pod: the metadata the policies and messages use (not
// managedFields, often the largest part of a request), and every field that holds an image.
type podView struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		InitContainers      []containerView `json:"initContainers"`
		Containers          []containerView `json:"containers"`
		EphemeralContainers []containerView `json:"ephemeralContainers"`
		Volumes             []struct {
			Name  string                    `json:"name"`
			Image *corev1.ImageVolumeSource `json:"image"`
		} `json:"volumes"`
	} `json:"spec"`
}

type containerView struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

func containers(in []containerView) []corev1.Container {
	if len(in) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(in))
	for i, c := range in {
		out[i].Name, out[i].Image = c.Name, c.Image
	}
	return out
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
