package policy

import "maps"

// Image is one image of a Pod, with the field path it was written at.
type Image struct {
	// Field is the field path, such as spec.containers[0].image.
	Field string
	// Ref is the image reference as written.
	Ref string
	// Container is the container's name (or the image volume's).
	Container string
	// Running is the digest the container runs, from the Pod's status (its imageID), when
	// known: the background audit sets it, and verify rules then check what runs rather than
	// what the spec names. Empty at admission.
	Running string
}

// Subject is what a decision is about: a Pod (or pod template), its namespace and its images.
type Subject struct {
	// Namespace is the Pod's namespace.
	Namespace string
	// NamespaceLabels are the labels of that namespace.
	NamespaceLabels map[string]string
	// NamespaceUnknown says the namespace's labels could not be read (not in the cache yet).
	// Policies that select namespaces by label then refuse rather than guess.
	NamespaceUnknown bool
	// PodLabels are the Pod's labels.
	PodLabels map[string]string
	// PodLabelsUnknown says the Pod's labels are not known (ImagePolicyWebhook does not send
	// them). A policy with a podSelector then covers the Pod: it is applied rather than
	// skipped, so that missing information never admits what the policy would deny.
	PodLabelsUnknown bool
	// Workload says the subject is a workload's pod template rather than a Pod: policies with
	// checkWorkloads: false do not cover it, and verify rules are left to its Pods
	// (Decision.VerifyDeferred) unless VerifyTemplates is set.
	Workload bool
	// VerifyTemplates makes verify rules check a pod template's images now: for the CLI,
	// which never sees the Pods.
	VerifyTemplates bool
	// BreakGlass says the Pod asks for break-glass (see BreakGlassRequested). Violations of
	// Enforce policies that allow break-glass then admit, as warnings.
	BreakGlass bool
	// Images are the images to check: all of a new Pod's, only the new or changed ones of an
	// updated Pod (see Updated).
	Images []Image
	// Update says the subject is an UPDATE (see Updated); OldPodLabels are the Pod labels
	// before it, and Unchanged the images it did not change.
	Update       bool
	OldPodLabels map[string]string
	Unchanged    []Image
}

// Updated makes the subject an UPDATE of an object whose images and Pod labels were oldImages
// and oldLabels, and whose images now are sub.Images. Images keeps the new or changed ones
// (whose field did not exist before or held another image): images already there are not
// checked again, so a policy made later never blocks unrelated edits of a running Pod, while
// `kubectl set image` and a new ephemeral container are checked. Unchanged keeps the others:
// a policy that covers the object only since its labels changed checks them too.
func (sub *Subject) Updated(oldImages []Image, oldLabels map[string]string) {
	before := make(map[string]string, len(oldImages))
	for _, img := range oldImages {
		before[img.Field] = img.Ref
	}
	var changed, unchanged []Image
	for _, img := range sub.Images {
		if prev, ok := before[img.Field]; !ok || prev != img.Ref {
			changed = append(changed, img)
		} else {
			unchanged = append(unchanged, img)
		}
	}
	sub.Update, sub.OldPodLabels, sub.Images, sub.Unchanged = true, oldLabels, changed, unchanged
}

// relabelled reports whether an UPDATE changed the Pod labels of an object with images that
// did not change: a policy may then cover it that did not before.
func (sub *Subject) relabelled() bool {
	return sub.Update && len(sub.Unchanged) > 0 && !sub.PodLabelsUnknown && !maps.Equal(sub.PodLabels, sub.OldPodLabels)
}

// NothingToCheck reports whether no policy can refuse the subject: an UPDATE that changes
// neither an image nor the Pod labels.
func (sub *Subject) NothingToCheck() bool {
	return len(sub.Images) == 0 && !sub.relabelled()
}
