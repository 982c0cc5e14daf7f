package podspec

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/imagegate/imagegate/internal/policy"
)

// workload is a kind that runs Pods from a pod template.
type workload struct {
	// GroupVersionKind is the kind at the version the apiserver serves.
	schema.GroupVersionKind
	// Resource is the kind's REST resource, as webhook rules name it.
	Resource string
	// TemplateSpec is the field path of the template's pod spec.
	TemplateSpec string
}

const templateSpec = "spec.template.spec"

// workloads lists every kind TemplateOf reads. The workload webhook's rules (the
// +kubebuilder:webhook marker in internal/webhook) must name the same resources: a test
// compares them with the generated config/webhook/manifests.yaml.
var workloads = []workload{
	{appsv1.SchemeGroupVersion.WithKind("Deployment"), "deployments", templateSpec},
	{appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), "replicasets", templateSpec},
	{appsv1.SchemeGroupVersion.WithKind("StatefulSet"), "statefulsets", templateSpec},
	{appsv1.SchemeGroupVersion.WithKind("DaemonSet"), "daemonsets", templateSpec},
	{batchv1.SchemeGroupVersion.WithKind("Job"), "jobs", templateSpec},
	{batchv1.SchemeGroupVersion.WithKind("CronJob"), "cronjobs", "spec.jobTemplate.spec.template.spec"},
	{corev1.SchemeGroupVersion.WithKind("ReplicationController"), "replicationcontrollers", templateSpec},
}

// WorkloadKind reports whether gvk is a workload whose pod template TemplateOf reads, at the
// version the apiserver serves.
func WorkloadKind(gvk schema.GroupVersionKind) bool {
	for i := range workloads {
		if workloads[i].GroupVersionKind == gvk {
			return true
		}
	}
	return false
}

// ServedVersion returns the group and version at which Kubernetes serves gvk's kind, when
// gvk is a Pod or a workload kind in a group that Kubernetes serves it in, or once did
// (extensions for Deployments, ReplicaSets and DaemonSets), so that an object at an old
// version (extensions/v1beta1, batch/v1beta1) is named as such. Another group's kind of the
// same name (OpenKruise's apps.kruise.io StatefulSet, Volcano's batch.volcano.sh Job) is not
// Kubernetes' and has no served version here.
func ServedVersion(gvk schema.GroupVersionKind) (schema.GroupVersion, bool) {
	if gvk.Kind == "Pod" && gvk.Group == corev1.GroupName {
		return corev1.SchemeGroupVersion, true
	}
	for i := range workloads {
		w := &workloads[i]
		if w.Kind != gvk.Kind {
			continue
		}
		if gvk.Group == w.Group || gvk.Group == "extensions" && w.Group == appsv1.GroupName && w.Kind != "StatefulSet" {
			return w.GroupVersion(), true
		}
	}
	return schema.GroupVersion{}, false
}

// Template is where an object keeps the pod spec it runs: a Pod's own spec, or a workload's
// pod template.
type Template struct {
	// Spec is the pod spec; nil when the workload has no template (a ReplicationController
	// may omit it).
	Spec *corev1.PodSpec
	// Labels and Annotations are those the Pods get.
	Labels, Annotations map[string]string
	// Prefix is the field path of Spec in the object, for messages.
	Prefix string
}

// TemplateOf returns the pod spec of a Pod or of a workload kind that Workloads lists, and
// false for any other object.
func TemplateOf(obj runtime.Object) (Template, bool) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return Template{Spec: &o.Spec, Labels: o.Labels, Annotations: o.Annotations, Prefix: "spec"}, true
	case *appsv1.Deployment:
		return fromTemplate(&o.Spec.Template, templateSpec), true
	case *appsv1.ReplicaSet:
		return fromTemplate(&o.Spec.Template, templateSpec), true
	case *appsv1.StatefulSet:
		return fromTemplate(&o.Spec.Template, templateSpec), true
	case *appsv1.DaemonSet:
		return fromTemplate(&o.Spec.Template, templateSpec), true
	case *batchv1.Job:
		return fromTemplate(&o.Spec.Template, templateSpec), true
	case *batchv1.CronJob:
		return fromTemplate(&o.Spec.JobTemplate.Spec.Template, "spec.jobTemplate.spec.template.spec"), true
	case *corev1.ReplicationController:
		if o.Spec.Template == nil {
			return Template{Prefix: templateSpec}, true
		}
		return fromTemplate(o.Spec.Template, templateSpec), true
	}
	return Template{}, false
}

// TemplateAt reads the pod template (a PodTemplateSpec: metadata and spec) that an object of
// another kind keeps at path (dotted, e.g. spec.template for an Argo Rollout), as the user
// declared it; false when the object has nothing there.
func TemplateAt(obj map[string]any, path string) (Template, bool, error) {
	raw, found, err := unstructured.NestedMap(obj, strings.Split(path, ".")...)
	if err != nil || !found {
		return Template{}, false, err
	}
	var t corev1.PodTemplateSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &t); err != nil {
		return Template{}, false, fmt.Errorf("%s is not a pod template: %w", path, err)
	}
	return fromTemplate(&t, path+".spec"), true, nil
}

func fromTemplate(t *corev1.PodTemplateSpec, prefix string) Template {
	return Template{Spec: &t.Spec, Labels: t.Labels, Annotations: t.Annotations, Prefix: prefix}
}

// Images lists the template's images (none without a spec).
func (t Template) Images() []policy.Image {
	if t.Spec == nil {
		return nil
	}
	return PodImages(t.Spec, t.Prefix)
}
