package policy

// Image is one image of a Pod, with the field path it was written at.
type Image struct {
	// Field is the field path, such as spec.containers[0].image.
	Field string
	// Ref is the image reference as written.
	Ref string
	// Container is the container's name (or the image volume's).
	Container string
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
	// checkWorkloads: false do not cover it.
	Workload bool
	// BreakGlass says the Pod asks for break-glass (see BreakGlassRequested). Violations of
	// Enforce policies that allow break-glass then admit, as warnings.
	BreakGlass bool
	// Images are the images to check: all of a new Pod's, only the new or changed ones of an
	// updated Pod.
	Images []Image
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
