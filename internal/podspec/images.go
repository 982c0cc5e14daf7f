package podspec

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/internal/policy"
)

// imageLists are the lists of a pod spec (by JSON name) that hold images: containers of three
// kinds and image volumes. PodImages reads every one; the webhook configuration's
// matchConditions must compare every one on UPDATE (a test checks both).
var imageLists = []string{"initContainers", "containers", "ephemeralContainers", "volumes"}

// PodImages lists every image of a pod spec with its field path below prefix ("spec" for a
// Pod, "spec.template.spec" for a Deployment): init containers, containers, ephemeral
// containers and image volumes. Empty image strings are listed too, so that they are judged
// (as unparsable) rather than skipped.
func PodImages(spec *corev1.PodSpec, prefix string) []policy.Image {
	n := len(spec.InitContainers) + len(spec.Containers) + len(spec.EphemeralContainers)
	for i := range spec.Volumes {
		if spec.Volumes[i].Image != nil {
			n++
		}
	}
	out := make([]policy.Image, 0, n)
	for i := range spec.InitContainers {
		out = append(out, policy.Image{Field: indexed(prefix, ".initContainers[", i, "].image"), Ref: spec.InitContainers[i].Image, Container: spec.InitContainers[i].Name})
	}
	for i := range spec.Containers {
		out = append(out, policy.Image{Field: indexed(prefix, ".containers[", i, "].image"), Ref: spec.Containers[i].Image, Container: spec.Containers[i].Name})
	}
	for i := range spec.EphemeralContainers {
		out = append(out, policy.Image{Field: indexed(prefix, ".ephemeralContainers[", i, "].image"), Ref: spec.EphemeralContainers[i].Image, Container: spec.EphemeralContainers[i].Name})
	}
	for i := range spec.Volumes {
		if v := spec.Volumes[i].Image; v != nil {
			out = append(out, policy.Image{Field: indexed(prefix, ".volumes[", i, "].image.reference"), Ref: v.Reference, Container: spec.Volumes[i].Name})
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
