package webhook

import (
	"context"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
)

// WorkloadWebhookPath is where the workload webhook is served.
const WorkloadWebhookPath = "/validate-workloads"

// The workload webhook fails open (failurePolicy=ignore): it only tells users early, at
// kubectl apply; the Pod webhook, which fails closed, stays the last line of defence.
// +kubebuilder:webhook:path=/validate-workloads,mutating=false,failurePolicy=ignore,sideEffects=None,groups=apps;batch;"",resources=deployments;replicasets;statefulsets;daemonsets;jobs;cronjobs;replicationcontrollers,verbs=create;update,versions=v1,name=workloads.imagegate.io,admissionReviewVersions=v1,matchPolicy=Equivalent,timeoutSeconds=5

// WorkloadValidator checks the pod templates of workloads with the Pod webhook's engine and
// messages (field paths into the template).
type WorkloadValidator struct {
	decider
	scheme  *runtime.Scheme
	decoder admission.Decoder
	enabled bool
}

// NewWorkloadValidator returns the validator; with enabled false it admits everything (the
// --check-workloads=false flag).
func NewWorkloadValidator(scheme *runtime.Scheme, snapshots policy.Source, namespaces client.Reader, enabled bool, recorder *telemetry.Recorder) *WorkloadValidator {
	return &WorkloadValidator{
		decider: decider{snapshots: snapshots, namespaces: namespaces, recorder: recorder, endpoint: telemetry.EndpointWorkload},
		scheme:  scheme, decoder: admission.NewDecoder(scheme), enabled: enabled,
	}
}

// SetupWorkloadWebhookWithManager registers the workload webhook on the manager's server.
func SetupWorkloadWebhookWithManager(mgr ctrl.Manager, snapshots policy.Source, enabled bool, recorder *telemetry.Recorder) {
	register(mgr.GetWebhookServer(), WorkloadWebhookPath, &ctrlwebhook.Admission{
		LogConstructor: requestLogger,
		Handler:        NewWorkloadValidator(mgr.GetScheme(), snapshots, mgr.GetCache(), enabled, recorder),
	})
}

// Handle decides one workload CREATE or UPDATE.
func (v *WorkloadValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if !v.enabled {
		return admission.Allowed("")
	}
	gvk := schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	if !podspec.WorkloadKind(gvk) || req.SubResource != "" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("imagegate checks the pod templates of apps/v1 and batch/v1 workloads and v1 ReplicationControllers, not %s", resourceName(req)))
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("imagegate checks CREATE and UPDATE, not %s", req.Operation))
	}
	if req.UID == "" {
		return admission.Errored(http.StatusBadRequest, errNoUID)
	}
	obj, err := v.decode(gvk, req.Object)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the %s: %w", gvk.Kind, err))
	}
	tmpl, _ := podspec.TemplateOf(obj)
	sub := policy.Subject{
		Namespace: req.Namespace, PodLabels: tmpl.Labels, Images: tmpl.Images(), Workload: true,
		BreakGlass: policy.BreakGlassRequested(tmpl.Annotations),
	}
	if req.Operation == admissionv1.Update {
		old, err := v.decode(gvk, req.OldObject)
		if err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the old %s: %w", gvk.Kind, err))
		}
		oldTmpl, _ := podspec.TemplateOf(old)
		sub.Updated(oldTmpl.Images(), oldTmpl.Labels)
	}
	d, ok := v.decide(ctx, &sub, telemetry.Object{Kind: gvk.Kind, Namespace: req.Namespace, Name: req.Name, DryRun: ptr.Deref(req.DryRun, false)}, nil)
	if !ok {
		return admission.Denied(notLoaded)
	}
	return admissionResponse(&d)
}

func (v *WorkloadValidator) decode(gvk schema.GroupVersionKind, raw runtime.RawExtension) (runtime.Object, error) {
	obj, err := v.scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	if err := v.decoder.DecodeRaw(raw, obj); err != nil {
		return nil, err
	}
	return obj, nil
}
