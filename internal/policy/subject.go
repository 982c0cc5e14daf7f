package policy

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// PodImages lists every image of a pod spec with its field path below prefix ("spec" for a
// Pod, "spec.template.spec" for a Deployment): init containers, containers, ephemeral
// containers and image volumes. Empty image strings are listed too, so that they are judged
// (as unparsable) rather than skipped.
func PodImages(spec *corev1.PodSpec, prefix string) []Image {
	n := len(spec.InitContainers) + len(spec.Containers) + len(spec.EphemeralContainers)
	for i := range spec.Volumes {
		if spec.Volumes[i].Image != nil {
			n++
		}
	}
	out := make([]Image, 0, n)
	for i := range spec.InitContainers {
		out = append(out, Image{Field: indexed(prefix, ".initContainers[", i, "].image"), Ref: spec.InitContainers[i].Image, Container: spec.InitContainers[i].Name})
	}
	for i := range spec.Containers {
		out = append(out, Image{Field: indexed(prefix, ".containers[", i, "].image"), Ref: spec.Containers[i].Image, Container: spec.Containers[i].Name})
	}
	for i := range spec.EphemeralContainers {
		out = append(out, Image{Field: indexed(prefix, ".ephemeralContainers[", i, "].image"), Ref: spec.EphemeralContainers[i].Image, Container: spec.EphemeralContainers[i].Name})
	}
	for i := range spec.Volumes {
		if v := spec.Volumes[i].Image; v != nil {
			out = append(out, Image{Field: indexed(prefix, ".volumes[", i, "].image.reference"), Ref: v.Reference, Container: spec.Volumes[i].Name})
		}
	}
	return out
}

func indexed(prefix, list string, i int, suffix string) string {
	b := make([]byte, 0, len(prefix)+len(list)+len(suffix)+4)
	b = append(b, prefix...)
	b = append(b, list...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, suffix...)
	return string(b)
}

// ChangedImages keeps the images of an updated object that are new or changed: those whose
// field did not exist before or held another image. Images that were already there are not
// checked again, so a policy made later never blocks unrelated edits of a running Pod, while
// `kubectl set image` and a new ephemeral container are checked.
func ChangedImages(old, updated []Image) []Image {
	before := make(map[string]string, len(old))
	for _, img := range old {
		before[img.Field] = img.Ref
	}
	var out []Image
	for _, img := range updated {
		if prev, ok := before[img.Field]; !ok || prev != img.Ref {
			out = append(out, img)
		}
	}
	return out
}
