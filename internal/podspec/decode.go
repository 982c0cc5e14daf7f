package podspec

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
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
