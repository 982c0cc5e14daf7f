package podspec

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

// pinMatches evaluates expression as the kube-apiserver evaluates a webhook's match
// condition (its CEL environment and matcher) for the CREATE of a Pod with images (containers)
// in namespace.
func pinMatches(t testing.TB, expression string, namespace string, pod *corev1.Pod) bool {
	t.Helper()
	m := compileMatcher([]plugincel.ExpressionAccessor{&matchconditions.MatchCondition{Name: "verify-rules", Expression: expression}})
	return sentToPinIn(t, m, namespace, pod, nil)
}

func podOf(images ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
	for i, img := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "c" + string(rune('a'+i)), Image: img})
	}
	return pod
}

// verifying compiles one policy whose verify section covers patterns (all images when none).
func verifying(t testing.TB, namespaced bool, patterns ...string) *policy.Snapshot {
	t.Helper()
	spec := v1alpha1.ImagePolicySpec{Verify: v1alpha1.VerifyRules{
		Signers:         []v1alpha1.Signer{{Name: "release", Key: v1alpha1.KeySigner{PublicKey: "k"}}},
		TransparencyLog: v1alpha1.TransparencyLogSkip,
	}}
	for _, p := range patterns {
		spec.Verify.Images = append(spec.Verify.Images, v1alpha1.ImagePattern(p))
	}
	var snap *policy.Snapshot
	if namespaced {
		snap = policy.Compile(nil, []v1alpha1.ImagePolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "v"}, Spec: spec}})
	} else {
		snap = policy.Compile([]v1alpha1.ClusterImagePolicy{{ObjectMeta: metav1.ObjectMeta{Name: "v"}, Spec: spec}}, nil)
	}
	for _, r := range snap.Refs() {
		if e := snap.PolicyError(r); e != "" {
			t.Skipf("%s: %s", r, e)
		}
	}
	return snap
}

const pinDigest = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestPinCondition(t *testing.T) {
	if got := PinCondition(nil); got != "false" {
		t.Errorf("no verify rule: %q, want false", got)
	}
	for _, c := range []struct {
		name       string
		namespaced bool
		patterns   []string
		namespace  string
		images     []string
		want       bool
	}{
		{"a covered tag", false, []string{"ghcr.io/acme/**"}, "b", []string{"ghcr.io/acme/app:1"}, true},
		{"the covered repository itself (** matches no segment)", false, []string{"ghcr.io/acme/**"}, "b", []string{"ghcr.io/acme:1"}, true},
		{"another registry", false, []string{"ghcr.io/acme/**"}, "b", []string{"quay.io/acme/app:1", "nginx:1.27"}, false},
		{"another repository of the registry", false, []string{"ghcr.io/acme/**"}, "b", []string{"ghcr.io/other/app:1"}, false},
		{"pinned by digest", false, []string{"ghcr.io/acme/**"}, "b", []string{"ghcr.io/acme/app" + pinDigest}, false},
		{"one covered image among others", false, []string{"ghcr.io/acme/**"}, "b", []string{"quay.io/x/y:1", "ghcr.io/acme/app:1"}, true},
		{"the host in capitals, with the HTTPS port", false, []string{"ghcr.io/acme/**"}, "b", []string{"GHCR.IO:443/acme/app:1"}, true},
		{"Docker Hub by any of its names", false, []string{"docker.io/library/nginx"}, "b", []string{"registry-1.docker.io/nginx:1"}, true},
		{"Docker Hub, short", false, []string{"nginx"}, "b", []string{"nginx"}, true},
		{"Docker Hub, another image", false, []string{"nginx"}, "b", []string{"redis:7"}, false},
		{"a port", false, []string{"registry.corp:5000/**"}, "b", []string{"registry.corp:05000/team/app:1"}, true},
		{"localhost", false, []string{"localhost:5000/**"}, "b", []string{"localhost:5000/app"}, true},
		{"an IPv6 registry", false, []string{"[::1]:5000/**"}, "b", []string{"[0:0:0:0:0:0:0:1]:5000/app:1"}, true},
		{"every image", false, nil, "b", []string{"quay.io/x/y:1"}, true},
		{"an ImagePolicy, its namespace", true, []string{"ghcr.io/**"}, "a", []string{"ghcr.io/acme/app:1"}, true},
		{"an ImagePolicy, another namespace", true, []string{"ghcr.io/**"}, "b", []string{"ghcr.io/acme/app:1"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := verifying(t, c.namespaced, c.patterns...)
			expr := PinCondition(snap.PinScope())
			if got := pinMatches(t, expr, c.namespace, podOf(c.images...)); got != c.want {
				t.Errorf("condition %v, want %v\n%s", got, c.want, expr)
			}
		})
	}
}

// Init containers, ephemeral containers and image volumes are read too.
func TestPinConditionReadsEveryImage(t *testing.T) {
	expr := PinCondition(verifying(t, false, "ghcr.io/acme/**").PinScope())
	for name, pod := range map[string]string{
		"init":      `{spec: {containers: [{name: a, image: "quay.io/x:1"}], initContainers: [{name: i, image: "ghcr.io/acme/init:1"}]}}`,
		"ephemeral": `{spec: {containers: [{name: a, image: "quay.io/x:1"}], ephemeralContainers: [{name: e, image: "ghcr.io/acme/debug:1"}]}}`,
		"volume":    `{spec: {containers: [{name: a, image: "quay.io/x:1"}], volumes: [{name: v, image: {reference: "ghcr.io/acme/data:1"}}]}}`,
	} {
		var p corev1.Pod
		if err := yaml.Unmarshal([]byte(pod), &p); err != nil {
			t.Fatal(err)
		}
		if !pinMatches(t, expr, "b", &p) {
			t.Errorf("%s: the condition does not send the Pod", name)
		}
	}
}

// The condition stays within the apiserver's cost limits at its largest.
func TestPinConditionLargest(t *testing.T) {
	var entries []policy.PinEntry
	for i := range maxPinEntries {
		entries = append(entries, policy.PinEntry{Namespace: "team-" + string(rune('a'+i%26)) + strings.Repeat("x", i%40), Host: "registry.example.com", PathPrefix: "acme/team-" + strings.Repeat("p", i%40)})
	}
	expr := PinCondition(entries)
	if expr == "true" {
		t.Fatalf("%d entries made a condition over %d characters", len(entries), maxPinCondition)
	}
	images := make([]string, 0, 40)
	for range 40 {
		images = append(images, "registry.example.com/"+strings.Repeat("a/", 100)+"app:1")
	}
	if pinMatches(t, expr, "b", podOf(images...)) {
		t.Error("no entry covers namespace b")
	}
	if PinCondition(append(entries, policy.PinEntry{})) != "true" {
		t.Error("past maxPinEntries the condition is not true")
	}
	long := []policy.PinEntry{{Namespace: "a", Host: "h", PathPrefix: strings.Repeat("p", maxPinCondition)}}
	if PinCondition(long) != "true" {
		t.Error("past maxPinCondition characters the condition is not true")
	}
}

// FuzzPinCondition: whenever the engine would pin an image (a verify rule covers it and it
// is not pinned), the condition sends the Pod to the pinning webhook; whenever it would
// verify one (pinned or not), VerifyHint holds for it. All may send more.
func FuzzPinCondition(f *testing.F) {
	f.Add("ghcr.io/acme/**", "ghcr.io/acme/app:1", false, "a")
	f.Add("docker.io/library/nginx", "index.docker.io:443/nginx", false, "b")
	f.Add("registry.corp:5000/*/app", "REGISTRY.corp:005000/team/app:v1", true, "a")
	f.Add("[::1]/x/**", "[0::1]:443/x/y", false, "a")
	f.Add("**", "acme/app", false, "a")
	f.Add("docker.io/library/nginx", "nginx:1.27", false, "a")
	f.Add("ghcr.io/acme/**", "ghcr.io/acme/app@sha256:"+strings.Repeat("a", 64), false, "a")
	f.Add("ghcr.io/acme/**", "GHCR.io:443/acme/app:1@sha256:"+strings.Repeat("b", 64), true, "b")
	f.Fuzz(func(t *testing.T, pattern, img string, namespaced bool, ns string) {
		if ns != "a" && ns != "b" {
			return
		}
		snap := verifying(t, namespaced, pattern)
		d := snap.Evaluate(&policy.Subject{Namespace: ns, Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img}}})
		if len(d.Pending) > 0 && !pinMatches(t, ImagesCEL+".exists(i, "+VerifyHint(snap.PinScope(), "i")+")", ns, podOf(img)) {
			t.Fatalf("verify %q checks %q in namespace %s, but VerifyHint does not hold for it", pattern, img, ns)
		}
		if len(d.Unpinned) == 0 {
			return
		}
		if !pinMatches(t, PinCondition(snap.PinScope()), ns, podOf(img)) {
			t.Fatalf("verify %q pins %q in namespace %s, but the condition does not send the Pod", pattern, img, ns)
		}
	})
}
