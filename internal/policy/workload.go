package policy

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// WorkloadKind reports whether gvk is a workload whose pod template TemplateOf reads:
// apps/v1 Deployment, ReplicaSet, StatefulSet and DaemonSet, batch/v1 Job and CronJob, and
// v1 ReplicationController (the versions the apiserver serves).
func WorkloadKind(gvk schema.GroupVersionKind) bool {
	switch gvk.GroupVersion() {
	case appsv1.SchemeGroupVersion:
		return gvk.Kind == "Deployment" || gvk.Kind == "ReplicaSet" || gvk.Kind == "StatefulSet" || gvk.Kind == "DaemonSet"
	case batchv1.SchemeGroupVersion:
		return gvk.Kind == "Job" || gvk.Kind == "CronJob"
	case corev1.SchemeGroupVersion:
		return gvk.Kind == "ReplicationController"
	}
	return false
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

// TemplateOf returns the pod spec of a Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
// Job, CronJob or ReplicationController, and false for any other object.
func TemplateOf(obj runtime.Object) (Template, bool) {
	const tmpl = "spec.template.spec"
	switch o := obj.(type) {
	case *corev1.Pod:
		return Template{Spec: &o.Spec, Labels: o.Labels, Annotations: o.Annotations, Prefix: "spec"}, true
	case *appsv1.Deployment:
		return Template{Spec: &o.Spec.Template.Spec, Labels: o.Spec.Template.Labels, Annotations: o.Spec.Template.Annotations, Prefix: tmpl}, true
	case *appsv1.ReplicaSet:
		return Template{Spec: &o.Spec.Template.Spec, Labels: o.Spec.Template.Labels, Annotations: o.Spec.Template.Annotations, Prefix: tmpl}, true
	case *appsv1.StatefulSet:
		return Template{Spec: &o.Spec.Template.Spec, Labels: o.Spec.Template.Labels, Annotations: o.Spec.Template.Annotations, Prefix: tmpl}, true
	case *appsv1.DaemonSet:
		return Template{Spec: &o.Spec.Template.Spec, Labels: o.Spec.Template.Labels, Annotations: o.Spec.Template.Annotations, Prefix: tmpl}, true
	case *batchv1.Job:
		return Template{Spec: &o.Spec.Template.Spec, Labels: o.Spec.Template.Labels, Annotations: o.Spec.Template.Annotations, Prefix: tmpl}, true
	case *batchv1.CronJob:
		t := &o.Spec.JobTemplate.Spec.Template
		return Template{Spec: &t.Spec, Labels: t.Labels, Annotations: t.Annotations, Prefix: "spec.jobTemplate.spec.template.spec"}, true
	case *corev1.ReplicationController:
		if o.Spec.Template == nil {
			return Template{Prefix: tmpl}, true
		}
		return Template{Spec: &o.Spec.Template.Spec, Labels: o.Spec.Template.Labels, Annotations: o.Spec.Template.Annotations, Prefix: tmpl}, true
	}
	return Template{}, false
}

// Images lists the template's images (none without a spec).
func (t Template) Images() []Image {
	if t.Spec == nil {
		return nil
	}
	return PodImages(t.Spec, t.Prefix)
}
