package podspec

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
)

// DecodePod decodes, from an AdmissionReview, the part of a Pod that imagegate reads, in one
// pass with the JSON decoding the apiserver itself uses (keys match case-sensitively, the last
// of duplicate keys wins), so that the webhook reads the very images the apiserver stores.
// Skipping the rest of the Pod (resources, env, probes, managedFields) instead of building it
// is most of the handler's own time: the apiserver has decoded and validated the whole object
// already.
func DecodePod(raw []byte, pod *corev1.Pod) error {
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
	spec.ServiceAccountName, spec.ImagePullSecrets = v.Spec.ServiceAccountName, v.Spec.ImagePullSecrets
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

// podView is what DecodePod reads of a Pod: the metadata the policies and messages use,
// every field that holds an image (imageLists), and the pull credentials it names (for
// --pull-secrets-from-pods).
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
		ServiceAccountName  string                        `json:"serviceAccountName"`
		ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
		InitContainers      []containerView               `json:"initContainers"`
		Containers          []containerView               `json:"containers"`
		EphemeralContainers []containerView               `json:"ephemeralContainers"`
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

// SlimPod is a cache transform (controller-runtime's cache.ByObject Transform) that trims Pods
// to what the audit reads: name, namespace, labels, the controller's owner reference, the
// break-glass annotations, the names and images of containers, the names of volumes and the
// references of image volumes, the phase, and the name and imageID of each container's
// status: a cached Pod holds only those (make sizing measures about 7.6 KiB of resident
// memory per cached Pod, Go's structs and GC headroom included). Objects that are not Pods pass unchanged.
func SlimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion, Labels: pod.Labels,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	// The controller (a ReplicaSet, a StatefulSet...), which reports name results by.
	if owner := metav1.GetControllerOfNoCopy(pod); owner != nil {
		slim.OwnerReferences = []metav1.OwnerReference{{APIVersion: owner.APIVersion, Kind: owner.Kind, Name: owner.Name, UID: owner.UID, Controller: owner.Controller}}
	}
	// What each container runs, for the audit's verify rules.
	slimStatuses := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		var out []corev1.ContainerStatus
		for _, c := range in {
			if c.ImageID != "" {
				out = append(out, corev1.ContainerStatus{Name: c.Name, ImageID: c.ImageID})
			}
		}
		return out
	}
	slim.Status.InitContainerStatuses = slimStatuses(pod.Status.InitContainerStatuses)
	slim.Status.ContainerStatuses = slimStatuses(pod.Status.ContainerStatuses)
	slim.Status.EphemeralContainerStatuses = slimStatuses(pod.Status.EphemeralContainerStatuses)
	for k, v := range pod.Annotations {
		if strings.Contains(k, ".image-policy.k8s.io/") {
			if slim.Annotations == nil {
				slim.Annotations = map[string]string{}
			}
			slim.Annotations[k] = v
		}
	}
	spec := &slim.Spec
	for _, c := range pod.Spec.InitContainers {
		spec.InitContainers = append(spec.InitContainers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range pod.Spec.Containers {
		spec.Containers = append(spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range pod.Spec.EphemeralContainers {
		spec.EphemeralContainers = append(spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name, Image: c.Image},
		})
	}
	// Every volume stays, by name, so that an image volume keeps its index (its field path).
	if n := len(pod.Spec.Volumes); n > 0 {
		spec.Volumes = make([]corev1.Volume, n)
		for i, v := range pod.Spec.Volumes {
			spec.Volumes[i].Name = v.Name
			if v.Image != nil {
				spec.Volumes[i].Image = &corev1.ImageVolumeSource{Reference: v.Image.Reference}
			}
		}
	}
	return slim, nil
}
