package podspec

import (
	"strconv"
	"strings"

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

// SetRunning sets, on the images PodImages listed for a Pod, the digest each container runs,
// read from the Pod's container statuses (status.*ContainerStatuses[].imageID, which the
// runtime reports as repository@digest). An imageID without a registry digest (an image the
// node loaded locally, reported by its ID alone) leaves Running empty.
func SetRunning(images []policy.Image, status *corev1.PodStatus) {
	lists := []struct {
		field    string
		statuses []corev1.ContainerStatus
	}{
		{"spec.initContainers[", status.InitContainerStatuses},
		{"spec.containers[", status.ContainerStatuses},
		{"spec.ephemeralContainers[", status.EphemeralContainerStatuses},
	}
	for i := range images {
		img := &images[i]
		for _, l := range lists {
			if !strings.HasPrefix(img.Field, l.field) {
				continue
			}
			for _, s := range l.statuses {
				if s.Name == img.Container {
					img.Running = RunningDigest(s.ImageID)
				}
			}
		}
	}
}

// RunningDigest is the digest of an imageID (repository@sha256:<hex>, with or without
// docker-pullable://), or "" when it names none.
func RunningDigest(imageID string) string {
	_, d, ok := strings.Cut(imageID, "@")
	if !ok || !strings.HasPrefix(d, "sha256:") || len(d) != len("sha256:")+64 {
		return ""
	}
	for _, c := range d[len("sha256:"):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	return d
}

// RunningSubject is a running Pod as the audit, the policy change preflight and imagegate
// check --running judge it (Running.Subject): its images with the digests its containers run
// (SetRunning), its labels and its break-glass request, in a namespace with labels nsLabels.
// false for a Pod that has finished (Succeeded or Failed), which nothing restarts.
func RunningSubject(pod *corev1.Pod, nsLabels map[string]string) (policy.Subject, bool) {
	return NewRunning(pod).Subject(nsLabels)
}
