package vap

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// The differential oracle: the generated policies, evaluated by the apiserver's CEL, must
// give every policy the very messages the engine gives it, in the same mode, for every image
// they decide; and for every image they leave to the webhook (not plain), the webhook's match
// condition must send the Pod.

// The two shapes of a plain reference, told apart by the runtime's rule for the first path
// component (hostRule): the oracle's own spelling of what plainRE folds into one expression.
const (
	plainWithHost    = `^` + hostRE + `/` + componentRE + `(?:/` + componentRE + `)*` + tagDigestRE + `$`
	plainWithoutHost = `^` + componentRE + `(?:/` + componentRE + `)*` + tagDigestRE + `$`
)

var (
	reImageID  = regexp.MustCompile(imageIDRE)
	reQuotable = regexp.MustCompile(quotableRE)
	reBareHex  = regexp.MustCompile(bareHexRE)
	reWithHost = regexp.MustCompile(plainWithHost)
	reNoHost   = regexp.MustCompile(plainWithoutHost)
)

// goKind is kindOf in Go, for the oracle's bookkeeping only (which images the webhook must
// see): the CEL is what is tested.
func goKind(s string) string {
	if reImageID.MatchString(s) {
		if reQuotable.MatchString(s) {
			return "id"
		}
		return "x"
	}
	if len([]rune(s)) > maxPlain || reBareHex.MatchString(s) {
		return "x"
	}
	name := strings.Split(s, "@")[0]
	first := strings.Split(name, "/")[0]
	host := strings.Contains(name, "/") && (strings.Contains(first, ".") || strings.Contains(first, ":") || first == "localhost")
	if (host && reWithHost.MatchString(s)) || (!host && reNoHost.MatchString(s)) {
		return "p"
	}
	return "x"
}

type world struct {
	cluster    []v1alpha1.ClusterImagePolicy
	namespaced []v1alpha1.ImagePolicy
}

// harness is a world's policies, compiled by the engine and, as generated policies, by the
// apiserver's CEL.
type harness struct {
	snap      *policy.Snapshot
	plan      Plan
	cs        []compiled
	condition string
}

func newHarness(t testing.TB, w world) *harness {
	snap := policy.Compile(w.cluster, w.namespaced)
	h := &harness{snap: snap, plan: Build(snap.NameRules(fixedNow), Options{})}
	h.cs = compilePlan(t, &h.plan)
	h.condition = WebhookCondition(&h.plan, snap.PinScope())
	return h
}

// differ checks one request against the oracle.
func (h *harness) differ(t *testing.T, pod, old *corev1.Pod, nsLabels map[string]string) {
	t.Helper()
	snap, plan := h.snap, &h.plan
	got := evaluate(t, h.cs, pod, old, nsLabels)

	sub := policy.Subject{Namespace: pod.Namespace, NamespaceLabels: nsLabels, PodLabels: pod.Labels,
		Images: podspec.PodImages(&pod.Spec, "spec"), BreakGlass: policy.BreakGlassRequested(pod.Annotations)}
	if old != nil {
		sub.Updated(podspec.PodImages(&old.Spec, "spec"), old.Labels)
	}
	d := snap.Evaluate(&sub)
	// What a verify rule covers is the webhook's to decide.
	needsWebhook := len(d.Pending) > 0
	type key struct {
		ref    policy.Ref
		bucket string
	}
	lines := map[key][]string{}
	var order []key
	for _, v := range d.Violations {
		if v.Rule == policy.RuleVerify {
			continue
		}
		// An image ID under a policy with no generated object (verify rules only) is the
		// webhook's: its match condition sends every Pod with an image ID.
		_, compiled := plan.Compiled[v.Policy]
		if _, kept := plan.Webhook[v.Policy]; kept || (v.Image != "" && goKind(v.Image) == "x") || v.Image == "" || (!compiled && goKind(v.Image) == "id") {
			needsWebhook = true
			continue
		}
		b := "denied"
		switch v.Mode {
		case v1alpha1.ModeWarn:
			b = "warnings"
		case v1alpha1.ModeAudit:
			b = "audits"
		}
		k := key{v.Policy, b}
		if _, ok := lines[k]; !ok {
			order = append(order, k)
		}
		lines[k] = append(lines[k], v.Message())
	}
	want := outcome{}
	for _, k := range order {
		msg := k.ref.String() + ": " + strings.Join(lines[k], "; ")
		switch k.bucket {
		case "denied":
			want.denied = append(want.denied, msg)
		case "warnings":
			want.warnings = append(want.warnings, msg)
		default:
			want.audits = append(want.audits, msg)
		}
	}
	for _, l := range [][]string{got.denied, got.warnings, got.audits, want.denied, want.warnings, want.audits} {
		slices.Sort(l)
	}
	if !slices.Equal(got.denied, want.denied) || !slices.Equal(got.warnings, want.warnings) || !slices.Equal(got.audits, want.audits) {
		t.Fatalf("images %q (old %v): the generated policies and the engine disagree\nCEL:\n%s\nengine:\n%s", imagesOf(pod), old != nil, got, want)
	}
	for _, img := range sub.Images {
		if goKind(img.Ref) != "p" {
			needsWebhook = true
		}
	}
	called := webhookCalled(t, h.condition, pod, old)
	if needsWebhook && !called {
		t.Fatalf("images %q: the engine decides part of this Pod that the generated policies leave to the webhook, but the webhook's match condition does not send it", imagesOf(pod))
	}
	// With no verify rule and no policy kept in the webhook, the condition sends exactly the
	// created Pods that need it: a plain image sent anyway would cost every such Pod a call.
	// (On UPDATE it looks at every image, where the engine checks the changed ones.)
	if old == nil && !needsWebhook && called && len(snap.PinScope()) == 0 && !plan.KeptClusterWide && !slices.Contains(plan.KeptNamespaces, pod.Namespace) {
		t.Fatalf("images %q: the webhook's match condition sends a Pod whose images the generated policies decide", imagesOf(pod))
	}
}

func imagesOf(pod *corev1.Pod) []string {
	var out []string
	for _, img := range podspec.PodImages(&pod.Spec, "spec") {
		out = append(out, img.Ref)
	}
	return out
}

func pod(ns string, labels map[string]string, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns, Labels: labels}}
	for i, img := range images {
		c := corev1.Container{Name: "c" + strconv.Itoa(i), Image: img}
		switch i % 3 {
		case 0:
			p.Spec.Containers = append(p.Spec.Containers, c)
		case 1:
			p.Spec.InitContainers = append(p.Spec.InitContainers, c)
		default:
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v" + strconv.Itoa(i), VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: img}}})
		}
	}
	if len(p.Spec.Containers) == 0 {
		p.Spec.Containers = []corev1.Container{{Name: "main", Image: "ghcr.io/acme/app:1.0"}}
	}
	return p
}

func cluster(name string, spec v1alpha1.ImagePolicySpec) v1alpha1.ClusterImagePolicy {
	return v1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func patterns(s ...string) []v1alpha1.ImagePattern {
	out := make([]v1alpha1.ImagePattern, len(s))
	for i, p := range s {
		out[i] = v1alpha1.ImagePattern(p)
	}
	return out
}

// tableWorld has one policy of every kind of name rule.
func tableWorld() world {
	return world{
		cluster: []v1alpha1.ClusterImagePolicy{
			cluster("trusted", v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: patterns("ghcr.io/acme/**", "docker.io/library/*", "registry.corp:5000/team/*", "localhost/app")}}),
			cluster("no-evil", v1alpha1.ImagePolicySpec{Mode: v1alpha1.ModeWarn, Images: v1alpha1.ImageRules{Deny: patterns("ghcr.io/acme/evil*", "docker.io/cryptominer/**", "nginx:1.25")}}),
			cluster("no-latest", v1alpha1.ImagePolicySpec{Mode: v1alpha1.ModeAudit, Tags: v1alpha1.TagRules{Deny: tags("latest", "dev"), RequireTag: ptr.To(true)},
				ExemptImages: patterns("ghcr.io/acme/vendor")}),
			// Verify rules: the webhook must be sent every Pod whose images they cover.
			cluster("signed", v1alpha1.ImagePolicySpec{Verify: v1alpha1.VerifyRules{
				Images:          patterns("ghcr.io/acme/signed/**", "docker.io/library/nginx", "registry.corp:5000/team/*"),
				Signers:         []v1alpha1.Signer{{Name: "ci", Key: v1alpha1.KeySigner{PublicKey: "unused"}}},
				TransparencyLog: v1alpha1.TransparencyLogSkip,
			}}),
			cluster("pinned-prod", v1alpha1.ImagePolicySpec{RequireDigest: ptr.To(true), AllowBreakGlass: ptr.To(true),
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
				PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}}}}}),
		},
		namespaced: []v1alpha1.ImagePolicy{{
			ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "prod"},
			Spec: v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Deny: patterns("ghcr.io/acme/legacy@sha256:" + strings.Repeat("a", 64))},
				PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "legacy", Operator: metav1.LabelSelectorOpDoesNotExist}}}},
		}},
	}
}

func tags(s ...string) []v1alpha1.TagName {
	out := make([]v1alpha1.TagName, len(s))
	for i, t := range s {
		out[i] = v1alpha1.TagName(t)
	}
	return out
}

// images are the references the table runs: the imageref fuzz seeds and corpus, and the
// spellings bypasses are made of.
func images(t testing.TB) []string {
	digest := "sha256:" + strings.Repeat("a", 64)
	out := []string{
		"nginx", "nginx:1.27", "nginx:1.25", "library/nginx", "docker.io/library/nginx:latest", "index.docker.io/acme/app",
		"registry-1.docker.io/cryptominer/xmrig:6", "docker.io:443/cryptominer/xmrig", "registry.hub.docker.com/library/nginx:1.25",
		"ghcr.io/acme/app:1.0", "ghcr.io:443/acme/evil:1", "ghcr.io/acme/evil-twin", "GHCR.io/acme/app", "ghcr.io/acme/team/app:dev",
		"ghcr.io/acme/vendor", "ghcr.io/acme/vendor:latest", "ghcr.io/acme/legacy@" + digest, "ghcr.io/acme/legacy:1@" + digest,
		"registry.corp:5000/team/app@" + digest, "registry.corp:05000/team/app", "registry.corp:5000/team/app:1", "localhost/app",
		"localhost:5000/app", "localhost", "localhost:5000", "[::1]:5000/app", "10.0.0.1/app", "DOCKER.IO/nginx", "Registry.Corp/App",
		"sha256:" + strings.Repeat("b", 64), "sha256:abc", "SHA256:abc", "sha512:x", "blake3:1", strings.Repeat("c", 64),
		"nginx ", "", "nginx@sha256:abc", "alpine:3.19@" + digest, "a/b/c/d/e/f:tag", "x:y:z", "@", ":", "/", "a//b", "a/./b",
		"a__b", "a___b", "a---b", "UPPER", "ghcr.io/acme/app@sha512:" + strings.Repeat("d", 128), "nginx\n", "ghcr.io/acme/\"q\"",
		"0_0.0/x", "foo.bar:443/x", "ghcr1io:443/acme/evil:1", "registry:443/app", "localhost:443/app", "docker.io/nginx:" + strings.Repeat("t", 128), "docker.io/" + strings.Repeat("n", 240),
	}
	dir := filepath.Join("..", "imageref", "testdata", "fuzz", "FuzzParse")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "string("); ok {
				if s, err := strconv.Unquote(strings.TrimSuffix(v, ")")); err == nil {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// TestDifferential runs every image of the table, alone and three to a Pod, created and
// updated, through the engine and the generated policies.
func TestDifferential(t *testing.T) {
	h := newHarness(t, tableWorld())
	prod := map[string]string{"kubernetes.io/metadata.name": "prod", "env": "prod"}
	imgs := images(t)
	for i, img := range imgs {
		h.differ(t, pod("prod", map[string]string{"tier": "web"}, img), nil, prod)
		h.differ(t, pod("dev", nil, img), nil, map[string]string{"kubernetes.io/metadata.name": "dev"})
		three := pod("prod", map[string]string{"tier": "api"}, img, imgs[(i+7)%len(imgs)], imgs[(i+13)%len(imgs)])
		h.differ(t, three, nil, prod)
		// UPDATE: the first image changed, the others did not; then the Pod relabelled into
		// pinned-prod's podSelector with no image changed.
		old := three.DeepCopy()
		old.Spec.Containers[0].Image = "ghcr.io/acme/app:0.9"
		h.differ(t, three, old, prod)
		relabel := three.DeepCopy()
		relabel.Labels = map[string]string{"tier": "batch"}
		h.differ(t, three, relabel, prod)
	}
	// Break-glass turns pinned-prod's denials into warnings.
	glass := pod("prod", map[string]string{"tier": "web"}, "ghcr.io/acme/app:1.0", "nginx")
	glass.Annotations = map[string]string{"alpha.image-policy.k8s.io/break-glass": "true"}
	h.differ(t, glass, nil, prod)
}

// TestConditionExact: with name rules only, the webhook's match condition sends exactly the
// Pods with an image the generated policies leave to it.
func TestConditionExact(t *testing.T) {
	w := tableWorld()
	w.cluster = slices.DeleteFunc(w.cluster, func(c v1alpha1.ClusterImagePolicy) bool { return len(c.Spec.Verify.Images) > 0 })
	h := newHarness(t, w)
	if len(h.snap.PinScope()) != 0 {
		t.Fatal("a verify rule is left")
	}
	for _, img := range images(t) {
		h.differ(t, pod("dev", nil, img), nil, map[string]string{"kubernetes.io/metadata.name": "dev"})
	}
}

var fixedNow = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
