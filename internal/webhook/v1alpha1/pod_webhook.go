// Package v1alpha1 adapts the policy engine to Kubernetes admission: it turns a Pod
// AdmissionReview into a policy.Subject, asks the engine, and turns the Decision into the
// response. It holds no rules of its own.
package v1alpha1

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/api/v1alpha1"
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
	snapshots  SnapshotSource
	namespaces client.Reader
	decoder    admission.Decoder
	recorder   *telemetry.Recorder
}

// NewPodValidator returns a PodValidator that takes policies from snapshots and namespace
// labels from namespaces (the manager's cache: no apiserver call per request).
func NewPodValidator(scheme *runtime.Scheme, snapshots SnapshotSource, namespaces client.Reader, recorder *telemetry.Recorder) *PodValidator {
	return &PodValidator{snapshots: snapshots, namespaces: namespaces, decoder: admission.NewDecoder(scheme), recorder: recorder}
}

// +kubebuilder:webhook:path=/validate-v1-pod,mutating=false,failurePolicy=fail,sideEffects=None,groups="",resources=pods;pods/ephemeralcontainers,verbs=create;update,versions=v1,name=pods.imagegate.io,admissionReviewVersions=v1,matchPolicy=Equivalent,timeoutSeconds=5
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupPodWebhookWithManager registers the Pod webhook on the manager's webhook server.
func SetupPodWebhookWithManager(mgr ctrl.Manager, snapshots SnapshotSource, recorder *telemetry.Recorder) {
	mgr.GetWebhookServer().Register(PodWebhookPath, BoundRequest(&webhook.Admission{
		Handler: NewPodValidator(mgr.GetScheme(), snapshots, mgr.GetCache(), recorder),
	}, RequestDeadline))
}

// RequestDeadline bounds how long a client may take to send a request body and read the
// answer: the server's own settings bound only the headers (32 s), so a client trickling its
// body (slowloris) could otherwise hold a connection forever. The apiserver sends a whole
// AdmissionReview at once and gives up after the webhook's timeout (5 s).
const RequestDeadline = 10 * time.Second

// BoundRequest sets read and write deadlines on the connection of each request to h.
func BoundRequest(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(d)
		// Not every ResponseWriter supports deadlines (a test recorder does not): no bound then.
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
		h.ServeHTTP(w, r)
	})
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Handle decides one request.
func (v *PodValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := logf.FromContext(ctx)
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
	if err := v.decoder.DecodeRaw(req.Object, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the Pod: %w", err))
	}
	images := policy.PodImages(&pod.Spec, "spec")
	if req.Operation == admissionv1.Update {
		old := &corev1.Pod{}
		if err := v.decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the old Pod: %w", err))
		}
		images = policy.ChangedImages(policy.PodImages(&old.Spec, "spec"), images)
	}

	snap := v.snapshots.Snapshot()
	if snap == nil {
		// Fail closed: before the policies are loaded nothing is known to be allowed.
		return admission.Denied("imagegate has not loaded its policies yet; retry in a few seconds")
	}
	start := time.Now()
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	sub := policy.Subject{Namespace: namespace, PodLabels: pod.Labels, Images: images, BreakGlass: policy.BreakGlassRequested(pod.Annotations)}
	if len(images) > 0 && snap.SelectsNamespaces() {
		// Only then: the lookup copies the object out of the cache.
		sub.NamespaceLabels, sub.NamespaceUnknown = namespaceLabels(ctx, v.namespaces, namespace)
	}

	d := snap.Evaluate(&sub)
	v.recorder.Decided(telemetry.EndpointPod, objectName("Pod", namespace, pod.Name, pod.GenerateName), snap, &d, time.Since(start))
	resp := admission.Allowed("")
	if !d.Allowed() {
		resp = admission.Denied(strings.Join(d.Messages(v1alpha1.ModeEnforce), "\n"))
	}
	resp.Warnings = d.Messages(v1alpha1.ModeWarn)
	resp.AuditAnnotations = d.AuditAnnotations()
	log.V(1).Info("Decided", "decision", resp.AuditAnnotations[policy.AnnotationDecision],
		"policies", d.Covered, "images", len(images), "violations", len(d.Violations))
	return resp
}

// namespaceLabels reads a namespace's labels from the cache; unknown when it is not there.
// namespaceLookupTimeout bounds the wait for a Namespace from the cache: the cache blocks
// until its informer has synced, and an apiserver that is slow to answer the watch must not
// make the webhook miss its own deadline (5 s). Past it, policies that select namespaces
// refuse with "retry", others decide normally.
const namespaceLookupTimeout = time.Second

func namespaceLabels(ctx context.Context, namespaces client.Reader, name string) (map[string]string, bool) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	ctx, cancel := context.WithTimeout(ctx, namespaceLookupTimeout)
	defer cancel()
	if err := namespaces.Get(ctx, types.NamespacedName{Name: name}, ns); err != nil {
		logf.FromContext(ctx).V(1).Info("Namespace labels unknown", "namespace", name, "reason", err.Error())
		return nil, true
	}
	return ns.Labels, false
}

// objectName names an object in Events: Kind namespace/name, or namespace/generateName* for
// an object whose name the apiserver has yet to generate.
func objectName(kind, namespace, name, generateName string) string {
	if name == "" {
		name = generateName + "*"
	}
	return kind + " " + namespace + "/" + name
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
