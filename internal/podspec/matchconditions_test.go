package podspec

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
	celplugin "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/cel/environment"
)

// pinMatcher compiles the mutating webhook's matchConditions with the kube-apiserver's own
// compiler and matcher, as the apiserver does for a MutatingWebhookConfiguration.
func pinMatcher(t *testing.T) matchconditions.Matcher {
	t.Helper()
	conds, _ := patchValue(t, pinScopePatch, "/webhooks/0/matchConditions").([]any)
	var exprs []celplugin.ExpressionAccessor
	for _, c := range conds {
		m, _ := c.(map[string]any)
		exprs = append(exprs, &matchconditions.MatchCondition{Name: m["name"].(string), Expression: m["expression"].(string)})
	}
	if len(exprs) < 2 {
		t.Fatalf("the pin webhook has %d matchConditions, want image-changed and image-without-digest", len(exprs))
	}
	return compileMatcher(exprs)
}

// compileMatcher compiles match conditions as the apiserver does for a webhook.
func compileMatcher(exprs []celplugin.ExpressionAccessor) matchconditions.Matcher {
	compiler := celplugin.NewConditionCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	fail := admissionregistrationv1.Fail
	return matchconditions.NewMatcher(compiler.CompileCondition(exprs, celplugin.OptionalVariableDeclarations{HasAuthorizer: true}, environment.StoredExpressions),
		&fail, "webhook", "admit", "pin.pods.imagegate.io")
}

// sentToPin reports whether the apiserver would call the pin webhook for pod (CREATE), or
// for the UPDATE from old to pod.
func sentToPin(t *testing.T, m matchconditions.Matcher, pod, old *corev1.Pod) bool {
	t.Helper()
	return sentToPinIn(t, m, "team-a", pod, old)
}

// sentToPinIn is sentToPin for a Pod in namespace.
func sentToPinIn(t testing.TB, m matchconditions.Matcher, namespace string, pod, old *corev1.Pod) bool {
	t.Helper()
	op := admission.Create
	var oldObj runtime.Object
	if old != nil {
		op, oldObj = admission.Update, old
	}
	gvk := corev1.SchemeGroupVersion.WithKind("Pod")
	attr := admission.NewAttributesRecord(pod, oldObj, gvk, namespace, "web", corev1.SchemeGroupVersion.WithResource("pods"), "", op, nil, false, nil)
	// The objects are already at the webhook's version: nothing to convert.
	va := &admission.VersionedAttributes{Attributes: attr, VersionedObject: admission.NewLazyObject(pod), VersionedKind: gvk}
	if old != nil {
		va.VersionedOldObject = admission.NewLazyObject(old)
	}
	res := m.Match(context.Background(), va, nil, nil)
	if res.Error != nil {
		t.Fatalf("matchConditions failed to evaluate: %v", res.Error)
	}
	return res.Matches
}

const (
	pinned = "ghcr.io/acme/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tagged = "ghcr.io/acme/app:1"
)

// podWith is a Pod whose every image is pinned, but list's first image, which is image.
func podWith(list, image string) *corev1.Pod {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers:      []corev1.Container{{Name: "init", Image: pinned}},
		Containers:          []corev1.Container{{Name: "app", Image: pinned}, {Name: "side", Image: pinned}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: pinned}}},
		Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "model", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: pinned}}},
		},
	}}
	switch list {
	case "initContainers":
		pod.Spec.InitContainers[0].Image = image
	case "containers":
		pod.Spec.Containers[1].Image = image
	case "ephemeralContainers":
		pod.Spec.EphemeralContainers[0].Image = image
	case "volumes":
		pod.Spec.Volumes[1].Image.Reference = image
	case "":
	default:
		panic("podWith: unknown list " + list)
	}
	return pod
}

// The pin webhook is called only for a Pod that has an image without a digest, in any of
// the lists that hold images (imageLists), and on UPDATE only when an image list changed.
// A Pod pinned throughout costs the apiserver one webhook call, not two.
func TestPinMatchConditionsSkipPinnedPods(t *testing.T) {
	m := pinMatcher(t)
	if sentToPin(t, m, podWith("", ""), nil) {
		t.Error("a Pod whose every image names its digest is sent to the pin webhook")
	}
	for _, l := range imageLists {
		for _, image := range []string{tagged, "", "busybox"} {
			if !sentToPin(t, m, podWith(l, image), nil) {
				t.Errorf("a Pod with %q in spec.%s is not sent to the pin webhook: its tag would not be pinned", image, l)
			}
		}
	}
	// Minimal Pods: nothing optional set.
	for _, tc := range []struct {
		pod  corev1.PodSpec
		want bool
	}{
		{corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: pinned}}}, false},
		{corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: tagged}}}, true},
		{corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}, true},
	} {
		if got := sentToPin(t, m, &corev1.Pod{Spec: tc.pod}, nil); got != tc.want {
			t.Errorf("sent(%v) = %v, want %v", tc.pod.Containers, got, tc.want)
		}
	}
	// UPDATE: sent when an image list changed and still has a tag; not when nothing changed.
	old := podWith("containers", tagged)
	if sentToPin(t, m, old.DeepCopy(), old) {
		t.Error("an UPDATE that changes no image is sent to the pin webhook")
	}
	for _, l := range imageLists {
		if !sentToPin(t, m, podWith(l, tagged+"-new"), podWith(l, tagged)) {
			t.Errorf("an UPDATE that sets a new tag in spec.%s is not sent to the pin webhook", l)
		}
	}
	if sentToPin(t, m, podWith("", ""), podWith("containers", tagged)) {
		t.Error("an UPDATE that pins every image is sent to the pin webhook")
	}
}
