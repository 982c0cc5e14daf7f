package policy

import (
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// policies parses YAML documents of ClusterImagePolicy and ImagePolicy objects.
func policies(t testing.TB, docs ...string) ([]v1alpha1.ClusterImagePolicy, []v1alpha1.ImagePolicy) {
	t.Helper()
	var cps []v1alpha1.ClusterImagePolicy
	var nps []v1alpha1.ImagePolicy
	for _, doc := range docs {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case KindClusterImagePolicy:
			var p v1alpha1.ClusterImagePolicy
			if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
				t.Fatal(err)
			}
			cps = append(cps, p)
		case KindImagePolicy:
			var p v1alpha1.ImagePolicy
			if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
				t.Fatal(err)
			}
			nps = append(nps, p)
		default:
			t.Fatalf("unknown kind in %q", doc)
		}
	}
	return cps, nps
}

func cluster(name, spec string) string {
	return "kind: ClusterImagePolicy\nmetadata: {name: " + name + "}\nspec: " + spec
}

func namespaced(ns, name, spec string) string {
	return "kind: ImagePolicy\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + spec
}

func containers(images ...string) []Image {
	out := make([]Image, len(images))
	for i, img := range images {
		out[i] = Image{Field: fmt.Sprintf("spec.containers[%d].image", i), Ref: img}
	}
	return out
}

var (
	trusted     = cluster("trusted", `{images: {allow: ["ghcr.io/acme/**", "registry.corp:5000/**", "nginx"]}}`)
	noLatest    = cluster("no-latest", `{tags: {deny: [latest]}}`)
	denyHub     = cluster("no-hub", `{images: {deny: ["docker.io/**"]}}`)
	acmeOneSeg  = cluster("acme-top", `{images: {allow: ["ghcr.io/acme/*"]}}`)
	corpOnly    = cluster("corp", `{images: {allow: ["registry.corp/**"]}}`)
	digestsProd = cluster("digests", `{requireDigest: true, namespaceSelector: {matchLabels: {env: prod}}}`)
)

type evalCase struct {
	name      string
	policies  []string
	namespace string // default "team-a"
	nsLabels  map[string]string
	nsUnknown bool
	podLabels map[string]string
	// podUnknown and breakGlass set the Subject fields of the same names.
	podUnknown bool
	breakGlass bool
	images     []Image
	allowed    bool
	want       []string // every violation's Mode and Message, in order
}

// lines is every violation of d as "Mode message", in order.
func lines(d *Decision) []string {
	out := []string{}
	for i := range d.Violations {
		out = append(out, string(d.Violations[i].Mode)+" "+d.Violations[i].Message())
	}
	return out
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func run(t *testing.T, cases []evalCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			cps, nps := policies(t, c.policies...)
			snap := Compile(cps, nps)
			ns := c.namespace
			if ns == "" {
				ns = "team-a"
			}
			nsLabels := map[string]string{"kubernetes.io/metadata.name": ns}
			for k, v := range c.nsLabels {
				nsLabels[k] = v
			}
			d := snap.Evaluate(&Subject{
				Namespace: ns, NamespaceLabels: nsLabels, NamespaceUnknown: c.nsUnknown,
				PodLabels: c.podLabels, Images: c.images,
				PodLabelsUnknown: c.podUnknown, BreakGlass: c.breakGlass,
			})
			g.Expect(lines(&d)).To(Equal(orEmpty(c.want)))
			g.Expect(d.Allowed()).To(Equal(c.allowed))
		})
	}
}

func TestEvaluate(t *testing.T) {
	run(t, []evalCase{
		{
			name:    "no policy admits everything",
			images:  containers("anything/at:all"),
			allowed: true,
		},
		{
			name:     "allowed registry",
			policies: []string{trusted},
			images:   containers("ghcr.io/acme/app:v1", "registry.corp:5000/team/db:15"),
			allowed:  true,
		},
		{
			name:     "denied registry with the whole message",
			policies: []string{trusted},
			images:   containers("ghcr.io/acme/app:v1", "quay.io/evil/app:v1"),
			want: []string{
				`Enforce spec.containers[1].image: image "quay.io/evil/app:v1" is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
			},
		},
		{
			name:     "init, ephemeral and image volume images are all checked",
			policies: []string{trusted},
			images: []Image{
				{Field: "spec.initContainers[0].image", Ref: "busybox:1.36"},
				{Field: "spec.containers[0].image", Ref: "nginx:1.27"},
				{Field: "spec.ephemeralContainers[0].image", Ref: "alpine"},
				{Field: "spec.volumes[0].image.reference", Ref: "quay.io/data:1", Container: "data"},
			},
			want: []string{
				`Enforce spec.initContainers[0].image: image "busybox:1.36" (docker.io/library/busybox:1.36) is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
				`Enforce spec.ephemeralContainers[0].image: image "alpine" (docker.io/library/alpine) is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
				`Enforce spec.volumes[0].image.reference: image "quay.io/data:1" is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
			},
		},
		{
			name:     "every violation of every policy is listed",
			policies: []string{trusted, noLatest},
			images:   containers("quay.io/x/y"),
			want: []string{
				`Enforce spec.containers[0].image: image "quay.io/x/y" is not allowed by ClusterImagePolicy "no-latest": it has neither tag nor digest, so it runs as "latest", which is in tags.deny`,
				`Enforce spec.containers[0].image: image "quay.io/x/y" is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
			},
		},
		{
			name:     "explicit latest tag",
			policies: []string{noLatest},
			images:   containers("nginx:latest"),
			want: []string{
				`Enforce spec.containers[0].image: image "nginx:latest" (docker.io/library/nginx:latest) is not allowed by ClusterImagePolicy "no-latest": its tag "latest" is in tags.deny`,
			},
		},
		{
			name:     "requireTag",
			policies: []string{cluster("tagged", `{tags: {requireTag: true}}`)},
			images:   containers("nginx", "nginx:1.27", "nginx@"+digestA),
			want: []string{
				`Enforce spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "tagged": it has neither tag nor digest and tags.requireTag is set`,
			},
		},
		{
			name:     "requireDigest in namespaces selected by label",
			policies: []string{digestsProd},
			nsLabels: map[string]string{"env": "prod"},
			images:   containers("nginx:1.27", "nginx@"+digestA),
			want: []string{
				`Enforce spec.containers[0].image: image "nginx:1.27" (docker.io/library/nginx:1.27) is not allowed by ClusterImagePolicy "digests": it is not pinned by digest (@sha256:...) and requireDigest is set`,
			},
		},
		{
			name:     "namespaceSelector that does not match",
			policies: []string{digestsProd},
			nsLabels: map[string]string{"env": "dev"},
			images:   containers("nginx:1.27"),
			allowed:  true,
		},
		{
			name:      "namespaceSelector with unknown namespace labels refuses rather than guesses",
			policies:  []string{digestsProd, noLatest},
			nsUnknown: true,
			images:    containers("nginx:1.27"),
			want: []string{
				`Enforce metadata.namespace: the Pod is not allowed by ClusterImagePolicy "digests": the labels of namespace "team-a" are not known yet, so whether the policy applies cannot be told; retry`,
			},
		},
		{
			name:      "podSelector",
			policies:  []string{cluster("web", `{podSelector: {matchLabels: {tier: web}}, tags: {deny: [latest]}}`)},
			podLabels: map[string]string{"tier": "db"},
			images:    containers("nginx"),
			allowed:   true,
		},
		{
			name:     "exemptImages skips this policy only",
			policies: []string{cluster("no-latest", `{tags: {deny: [latest]}, exemptImages: ["vendor.io/agent"]}`), trusted},
			images:   containers("vendor.io/agent:latest"),
			want: []string{
				`Enforce spec.containers[0].image: image "vendor.io/agent:latest" is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`,
			},
		},
		{
			name:     "Warn mode admits with a warning",
			policies: []string{cluster("warn-latest", `{mode: Warn, tags: {deny: [latest]}}`)},
			images:   containers("nginx"),
			allowed:  true,
			want: []string{
				`Warn spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "warn-latest": it has neither tag nor digest, so it runs as "latest", which is in tags.deny`,
			},
		},
		{
			name:     "Audit mode admits and records",
			policies: []string{cluster("audit-hub", `{mode: Audit, images: {deny: ["docker.io/**"]}}`)},
			images:   containers("nginx:1.27"),
			allowed:  true,
			want: []string{
				`Audit spec.containers[0].image: image "nginx:1.27" (docker.io/library/nginx:1.27) is not allowed by ClusterImagePolicy "audit-hub": it matches images.deny[0] "docker.io/**"`,
			},
		},
		{
			name:     "namespaced policy adds a restriction",
			policies: []string{trusted, namespaced("team-a", "pinned", `{requireDigest: true}`)},
			images:   containers("ghcr.io/acme/app:v1"),
			want: []string{
				`Enforce spec.containers[0].image: image "ghcr.io/acme/app:v1" is not allowed by ImagePolicy "pinned": it is not pinned by digest (@sha256:...) and requireDigest is set`,
			},
		},
		{
			name:      "namespaced policy of another namespace does not apply",
			policies:  []string{namespaced("team-b", "pinned", `{requireDigest: true}`)},
			namespace: "team-a",
			images:    containers("ghcr.io/acme/app:v1"),
			allowed:   true,
		},
		{
			name:     "invalid policy refuses every Pod it may cover",
			policies: []string{cluster("broken", `{podSelector: {matchLabels: {"bad key!": x}}, tags: {deny: [latest]}}`)},
			images:   containers("nginx:1.27"),
			want: []string{
				`Enforce spec: the Pod is not allowed by ClusterImagePolicy "broken": the policy is invalid, so it refuses every Pod it may cover until it is fixed: spec.podSelector: key: Invalid value: "bad key!": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
			},
		},
	})
}

// TestBypasses is the regression suite for every way around an image rule that users of
// other engines have reported (LANDSCAPE.md): each case is an attempt that must fail, or a
// legitimate image that must not be caught by mistake.
func TestBypasses(t *testing.T) {
	// normalized is "(form)" as the message prints it after the image; the message leaves it
	// out when it is the image as written.
	deny := func(img, policy, normalized string) string {
		if normalized == "("+img+")" {
			normalized = ""
		} else {
			normalized = " " + normalized
		}
		return `Enforce spec.containers[0].image: image "` + img + `"` + normalized + ` is not allowed by ClusterImagePolicy "` + policy + `": `
	}
	noAllow := "it matches no pattern in images.allow"
	cases := []evalCase{
		// Host-prefix tricks.
		{name: "host suffix", policies: []string{corpOnly}, images: containers("registry.corp.evil.io/app:1"),
			want: []string{deny("registry.corp.evil.io/app:1", "corp", "(registry.corp.evil.io/app:1)") + noAllow}},
		{name: "host with another port", policies: []string{corpOnly}, images: containers("registry.corp:444/app:1"),
			want: []string{deny("registry.corp:444/app:1", "corp", "(registry.corp:444/app:1)") + noAllow}},
		{name: "host as a path segment", policies: []string{corpOnly}, images: containers("evil.io/registry.corp/app:1"),
			want: []string{deny("evil.io/registry.corp/app:1", "corp", "(evil.io/registry.corp/app:1)") + noAllow}},
		{name: "host without dot is a Docker Hub path", policies: []string{cluster("corp", `{images: {allow: ["registry.corp/**"]}}`)}, images: containers("registry/app:1"),
			want: []string{deny("registry/app:1", "corp", "(docker.io/registry/app:1)") + noAllow}},
		{name: "uppercase host still meets deny", policies: []string{cluster("no-corp", `{images: {deny: ["registry.corp/**"]}}`)}, images: containers("REGISTRY.Corp/app:1"),
			want: []string{`Enforce spec.containers[0].image: image "REGISTRY.Corp/app:1" (registry.corp/app:1) is not allowed by ClusterImagePolicy "no-corp": it matches images.deny[0] "registry.corp/**"`}},
		{name: "allowed host exact", policies: []string{corpOnly}, images: containers("registry.corp/a/b/c:1"), allowed: true},
		// Path-prefix tricks.
		{name: "organization prefix", policies: []string{acmeOneSeg}, images: containers("ghcr.io/acmeevil/app:1"),
			want: []string{deny("ghcr.io/acmeevil/app:1", "acme-top", "(ghcr.io/acmeevil/app:1)") + noAllow}},
		{name: "single star does not cross slash", policies: []string{acmeOneSeg}, images: containers("ghcr.io/acme/team/app:1"),
			want: []string{deny("ghcr.io/acme/team/app:1", "acme-top", "(ghcr.io/acme/team/app:1)") + noAllow}},
		{name: "double star crosses slashes", policies: []string{trusted}, images: containers("ghcr.io/acme/team/sub/app:1"), allowed: true},
		{name: "double star is not a string prefix", policies: []string{trusted}, images: containers("ghcr.io/acme-evil/app:1"),
			want: []string{deny("ghcr.io/acme-evil/app:1", "trusted", "(ghcr.io/acme-evil/app:1)") + noAllow}},
		{name: "repository named like the org", policies: []string{acmeOneSeg}, images: containers("ghcr.io/acme:1"),
			want: []string{deny("ghcr.io/acme:1", "acme-top", "(ghcr.io/acme:1)") + noAllow}},
		{name: "other registry with same path", policies: []string{trusted}, images: containers("quay.io/acme/app:1"),
			want: []string{deny("quay.io/acme/app:1", "trusted", "(quay.io/acme/app:1)") + noAllow}},
		// Implicit Docker Hub and library/.
		{name: "short name is docker.io/library", policies: []string{denyHub}, images: containers("nginx:1.27"),
			want: []string{deny("nginx:1.27", "no-hub", "(docker.io/library/nginx:1.27)") + `it matches images.deny[0] "docker.io/**"`}},
		{name: "library/ form", policies: []string{denyHub}, images: containers("library/nginx:1.27"),
			want: []string{deny("library/nginx:1.27", "no-hub", "(docker.io/library/nginx:1.27)") + `it matches images.deny[0] "docker.io/**"`}},
		{name: "index.docker.io form", policies: []string{denyHub}, images: containers("index.docker.io/library/nginx:1.27"),
			want: []string{deny("index.docker.io/library/nginx:1.27", "no-hub", "(docker.io/library/nginx:1.27)") + `it matches images.deny[0] "docker.io/**"`}},
		{name: "docker.io/nginx form", policies: []string{denyHub}, images: containers("docker.io/nginx:1.27"),
			want: []string{deny("docker.io/nginx:1.27", "no-hub", "(docker.io/library/nginx:1.27)") + `it matches images.deny[0] "docker.io/**"`}},
		{name: "user repository on hub", policies: []string{denyHub}, images: containers("acme/app:1"),
			want: []string{deny("acme/app:1", "no-hub", "(docker.io/acme/app:1)") + `it matches images.deny[0] "docker.io/**"`}},
		{name: "allow nginx admits every spelling", policies: []string{trusted},
			images: containers("nginx", "library/nginx:1", "docker.io/library/nginx:2", "index.docker.io/nginx:3"), allowed: true},
		{name: "allow nginx is not acme/nginx", policies: []string{trusted}, images: containers("acme/nginx:1"),
			want: []string{deny("acme/nginx:1", "trusted", "(docker.io/acme/nginx:1)") + noAllow}},
		{name: "deny a short-name pattern", policies: []string{cluster("no-busybox", `{images: {deny: ["busybox"]}}`)}, images: containers("docker.io/library/busybox:1.36"),
			want: []string{deny("docker.io/library/busybox:1.36", "no-busybox", "(docker.io/library/busybox:1.36)") + `it matches images.deny[0] "busybox"`}},
		// Registries with ports, localhost and IP hosts.
		{name: "localhost is a host", policies: []string{denyHub}, images: containers("localhost/app:1"), allowed: true},
		{name: "localhost with port", policies: []string{cluster("no-local", `{images: {deny: ["localhost:5000/**"]}}`)}, images: containers("localhost:5000/app:1"),
			want: []string{deny("localhost:5000/app:1", "no-local", "(localhost:5000/app:1)") + `it matches images.deny[0] "localhost:5000/**"`}},
		{name: "IP host", policies: []string{corpOnly}, images: containers("10.0.0.1:5000/app:1"),
			want: []string{deny("10.0.0.1:5000/app:1", "corp", "(10.0.0.1:5000/app:1)") + noAllow}},
		{name: "IPv6 host", policies: []string{corpOnly}, images: containers("[::1]:5000/app:1"),
			want: []string{deny("[::1]:5000/app:1", "corp", "([::1]:5000/app:1)") + noAllow}},
		{name: "port registry allowed", policies: []string{trusted}, images: containers("registry.corp:5000/db:15"), allowed: true},
		// Tag plus digest: the digest decides.
		{name: "tag plus digest skips tag deny", policies: []string{noLatest}, images: containers("alpine:latest@" + digestA), allowed: true},
		{name: "tag plus digest does not match a tag allow", policies: []string{cluster("pinned-tag", `{images: {allow: ["alpine:3.19"]}}`)}, images: containers("alpine:3.19@" + digestB),
			want: []string{deny("alpine:3.19@"+digestB, "pinned-tag", "(docker.io/library/alpine:3.19@"+digestB+")") + noAllow}},
		{name: "digest allowlist admits the scanned digest", policies: []string{cluster("scanned", `{images: {allow: ["alpine@`+digestA+`"]}}`)}, images: containers("alpine:3.19@" + digestA), allowed: true},
		{name: "digest allowlist refuses another digest", policies: []string{cluster("scanned", `{images: {allow: ["alpine@`+digestA+`"]}}`)}, images: containers("alpine@" + digestB),
			want: []string{deny("alpine@"+digestB, "scanned", "(docker.io/library/alpine@"+digestB+")") + noAllow}},
		{name: "digest allowlist refuses the tag", policies: []string{cluster("scanned", `{images: {allow: ["alpine@`+digestA+`"]}}`)}, images: containers("alpine:3.19"),
			want: []string{deny("alpine:3.19", "scanned", "(docker.io/library/alpine:3.19)") + noAllow}},
		{name: "tag deny pattern catches implicit latest", policies: []string{cluster("no-nginx-latest", `{images: {deny: ["nginx:latest"]}}`)}, images: containers("nginx"),
			want: []string{deny("nginx", "no-nginx-latest", "(docker.io/library/nginx)") + `it matches images.deny[0] "nginx:latest"`}},
		// Uppercase and unparsable references are denied, never repaired.
		{name: "uppercase repository", policies: []string{trusted}, images: containers("ghcr.io/ACME/app:1"),
			want: []string{`Enforce spec.containers[0].image: image "ghcr.io/ACME/app:1" is not allowed by ClusterImagePolicy "trusted": it is not a valid image reference: invalid reference format: repository name (ACME/app) must be lowercase`}},
		{name: "trailing space", policies: []string{denyHub}, images: containers("nginx "),
			want: []string{`Enforce spec.containers[0].image: image "nginx " is not allowed by ClusterImagePolicy "no-hub": it is not a valid image reference: invalid reference format`}},
		{name: "empty image", policies: []string{noLatest}, images: containers(""),
			want: []string{`Enforce spec.containers[0].image: image "" is not allowed by ClusterImagePolicy "no-latest": it is not a valid image reference: invalid reference format`}},
		{name: "bad digest", policies: []string{noLatest}, images: containers("nginx@sha256:" + strings.Repeat("a", 32)),
			want: []string{`Enforce spec.containers[0].image: image "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" is not allowed by ClusterImagePolicy "no-latest": it is not a valid image reference: invalid checksum digest length`}},
		{name: "unparsable image is denied by a Warn policy only as a warning", policies: []string{cluster("w", `{mode: Warn, tags: {deny: [latest]}}`)}, images: containers("UPPER"), allowed: true,
			want: []string{`Warn spec.containers[0].image: image "UPPER" is not allowed by ClusterImagePolicy "w": it is not a valid image reference: invalid reference format: repository name (library/UPPER) must be lowercase`}},
		// ** edge cases.
		{name: "** matches zero segments", policies: []string{cluster("base", `{images: {allow: ["ghcr.io/**/base"]}}`)}, images: containers("ghcr.io/base:1", "ghcr.io/a/b/base:1"), allowed: true},
		{name: "** does not match a suffix of a segment", policies: []string{cluster("base", `{images: {allow: ["ghcr.io/**/base"]}}`)}, images: containers("ghcr.io/a/notbase:1"),
			want: []string{deny("ghcr.io/a/notbase:1", "base", "(ghcr.io/a/notbase:1)") + noAllow}},
		{name: "bare ** is all of Docker Hub, not other registries", policies: []string{cluster("hub", `{images: {allow: ["**"]}}`)}, images: containers("ghcr.io/acme/app:1", "acme/app:1", "nginx"),
			want: []string{deny("ghcr.io/acme/app:1", "hub", "(ghcr.io/acme/app:1)") + noAllow}},
		{name: "docker.io/* is the official images only", policies: []string{cluster("official", `{images: {allow: ["docker.io/*"]}}`)}, images: containers("acme/app:1"),
			want: []string{deny("acme/app:1", "official", "(docker.io/acme/app:1)") + noAllow}},
		{name: "registry-wide ** with tag", policies: []string{cluster("no-acme-latest", `{images: {deny: ["ghcr.io/acme/**:latest"]}}`)}, images: containers("ghcr.io/acme/a/b"),
			want: []string{deny("ghcr.io/acme/a/b", "no-acme-latest", "(ghcr.io/acme/a/b)") + `it matches images.deny[0] "ghcr.io/acme/**:latest"`}},
		// Allow plus deny precedence.
		{name: "deny wins over allow", policies: []string{cluster("mixed", `{images: {allow: ["ghcr.io/acme/**"], deny: ["ghcr.io/acme/legacy/*"]}}`)}, images: containers("ghcr.io/acme/legacy/app:1"),
			want: []string{deny("ghcr.io/acme/legacy/app:1", "mixed", "(ghcr.io/acme/legacy/app:1)") + `it matches images.deny[0] "ghcr.io/acme/legacy/*"`}},
		{name: "first matching deny pattern is named", policies: []string{cluster("mixed", `{images: {deny: ["quay.io/x/y", "quay.io/**", "quay.io/x/*"]}}`)}, images: containers("quay.io/x/y:1"),
			want: []string{deny("quay.io/x/y:1", "mixed", "(quay.io/x/y:1)") + `it matches images.deny[0] "quay.io/x/y"`}},
		// Several policies; a namespaced policy cannot loosen a cluster policy.
		{name: "namespaced allow does not loosen cluster allow", policies: []string{trusted, namespaced("team-a", "loose", `{images: {allow: ["quay.io/**"]}}`)}, images: containers("quay.io/x/y:1"),
			want: []string{deny("quay.io/x/y:1", "trusted", "(quay.io/x/y:1)") + noAllow}},
		{name: "namespaced exemption does not exempt from cluster policy", policies: []string{noLatest, namespaced("team-a", "exempt", `{exemptImages: ["nginx"], tags: {deny: ["old"]}}`)}, images: containers("nginx"),
			want: []string{deny("nginx", "no-latest", "(docker.io/library/nginx)") + `it has neither tag nor digest, so it runs as "latest", which is in tags.deny`}},
		{name: "namespaced Warn does not soften cluster Enforce", policies: []string{denyHub, namespaced("team-a", "warn", `{mode: Warn, images: {deny: ["docker.io/**"]}}`)}, images: containers("nginx:1"),
			want: []string{
				deny("nginx:1", "no-hub", "(docker.io/library/nginx:1)") + `it matches images.deny[0] "docker.io/**"`,
				`Warn spec.containers[0].image: image "nginx:1" (docker.io/library/nginx:1) is not allowed by ImagePolicy "warn": it matches images.deny[0] "docker.io/**"`,
			}},
		{name: "namespaced policy named like a cluster policy is still separate", policies: []string{noLatest, namespaced("team-a", "no-latest", `{tags: {deny: ["dev"]}}`)}, images: containers("nginx:dev"),
			want: []string{`Enforce spec.containers[0].image: image "nginx:dev" (docker.io/library/nginx:dev) is not allowed by ImagePolicy "no-latest": its tag "dev" is in tags.deny`}},
		{name: "pod labels cannot opt out of a cluster policy without podSelector", policies: []string{noLatest}, podLabels: map[string]string{"imagegate.io/skip": "true"}, images: containers("nginx"),
			want: []string{deny("nginx", "no-latest", "(docker.io/library/nginx)") + `it has neither tag nor digest, so it runs as "latest", which is in tags.deny`}},
		{name: "a repeated pattern across policies is judged for each", policies: []string{denyHub, cluster("no-hub-2", `{images: {deny: ["docker.io/**"]}}`)}, images: containers("nginx:1"),
			want: []string{
				deny("nginx:1", "no-hub", "(docker.io/library/nginx:1)") + `it matches images.deny[0] "docker.io/**"`,
				deny("nginx:1", "no-hub-2", "(docker.io/library/nginx:1)") + `it matches images.deny[0] "docker.io/**"`,
			}},
	}
	if len(cases) < 40 {
		t.Fatalf("the bypass suite must keep at least 40 cases, has %d", len(cases))
	}
	run(t, cases)
}

func TestUnknownModeFailsClosed(t *testing.T) {
	run(t, []evalCase{{
		name:     "a mode the schema would refuse denies rather than passes",
		policies: []string{cluster("typo", `{mode: Block, tags: {deny: [latest]}}`)},
		images:   containers("nginx"),
		want: []string{
			`Enforce spec: the Pod is not allowed by ClusterImagePolicy "typo": the policy is invalid, so it refuses every Pod it may cover until it is fixed: spec.mode: "Block" is not Enforce, Warn or Audit`,
		},
	}})
}

func TestNothingToCheckIsNeverRefused(t *testing.T) {
	// An UPDATE that changes no image has no images in its subject: neither an invalid policy
	// nor an unknown namespace may block a label edit.
	run(t, []evalCase{{
		name:      "no images",
		policies:  []string{digestsProd, cluster("broken", `{podSelector: {matchLabels: {"bad key!": x}}, tags: {deny: [latest]}}`)},
		nsUnknown: true,
		allowed:   true,
	}})
}

func TestSelectsNamespaces(t *testing.T) {
	g := NewWithT(t)
	cps, nps := policies(t, trusted, namespaced("a", "p", `{requireDigest: true}`))
	g.Expect(Compile(cps, nps).SelectsNamespaces()).To(BeFalse())
	cps, nps = policies(t, trusted, digestsProd)
	g.Expect(Compile(cps, nps).SelectsNamespaces()).To(BeTrue())
}

func TestUpdated(t *testing.T) {
	g := NewWithT(t)
	old := containers("nginx:1", "redis:7")
	sub := Subject{Images: append(containers("nginx:1", "redis:8"), Image{Field: "spec.ephemeralContainers[0].image", Ref: "busybox"})}
	sub.Updated(old, map[string]string{"app": "x"})
	g.Expect(sub.Images).To(Equal([]Image{
		{Field: "spec.containers[1].image", Ref: "redis:8"},
		{Field: "spec.ephemeralContainers[0].image", Ref: "busybox"},
	}))
	g.Expect(sub.Unchanged).To(Equal([]Image{{Field: "spec.containers[0].image", Ref: "nginx:1"}}))
	g.Expect(sub.Update).To(BeTrue())
	g.Expect(sub.OldPodLabels).To(Equal(map[string]string{"app": "x"}))
	same := Subject{Images: old}
	same.Updated(old, nil)
	g.Expect(same.Images).To(BeEmpty())
	g.Expect(same.NothingToCheck()).To(BeTrue())
}

func TestDecisionAnnotations(t *testing.T) {
	g := NewWithT(t)
	cps, nps := policies(t, denyHub, cluster("warn", `{mode: Warn, tags: {deny: [latest]}}`))
	snap := Compile(cps, nps)
	d := snap.Evaluate(&Subject{Namespace: "a", Images: containers("nginx")})
	g.Expect(d.AuditAnnotations()).To(Equal(map[string]string{
		"decision": "denied",
		"policies": "Enforce:ClusterImagePolicy/no-hub,Warn:ClusterImagePolicy/warn",
	}))
	g.Expect(d.Messages(v1alpha1.ModeWarn)).To(HaveLen(1))
	d = snap.Evaluate(&Subject{Namespace: "a", Images: containers("ghcr.io/a/b:1")})
	g.Expect(d.AuditAnnotations()).To(Equal(map[string]string{"decision": "allowed"}))
	g.Expect(snap.PolicyError(Ref{Kind: KindClusterImagePolicy, Name: "no-hub"})).To(BeEmpty())
}

func TestCompileReportsInvalidPolicies(t *testing.T) {
	g := NewWithT(t)
	cps, nps := policies(t,
		cluster("bad-pattern", `{images: {allow: ["ghcr.io/Acme/*", "*.corp/x"]}}`),
		namespaced("a", "selector", `{namespaceSelector: {matchLabels: {a: b}}, requireDigest: true}`),
		cluster("empty", `{}`),
	)
	snap := Compile(cps, nps)
	g.Expect(snap.PolicyError(Ref{Kind: KindClusterImagePolicy, Name: "bad-pattern"})).To(Equal(
		`spec.images.allow[0]: invalid pattern "ghcr.io/Acme/*": invalid reference format: repository name (Acme/*) must be lowercase; ` +
			`spec.images.allow[1]: invalid pattern "*.corp/x": a registry host cannot contain * or **: name the registry exactly, for example ghcr.io/acme/*`))
	g.Expect(snap.PolicyError(Ref{Kind: KindImagePolicy, Namespace: "a", Name: "selector"})).To(Equal(
		"spec.namespaceSelector: not allowed on ImagePolicy, which covers only its own namespace"))
	g.Expect(snap.PolicyError(Ref{Kind: KindClusterImagePolicy, Name: "empty"})).To(Equal("spec: the policy restricts nothing"))
}

func TestStampWrapKeepsDecisions(t *testing.T) {
	g := NewWithT(t)
	cps, nps := policies(t, trusted, noLatest)
	snap := Compile(cps, nps)
	sub := &Subject{Namespace: "a", Images: containers("ghcr.io/acme/a:1", "quay.io/x:1", "nginx")}
	want := snap.Evaluate(sub)
	g.Expect(want.Violations).To(HaveLen(2))
	// Every stamp position around the wrap, including between two images of one Pod.
	for offset := uint32(0); offset < 6; offset++ {
		sc := snap.scratch.New().(*scratch)
		sc.gen = ^uint32(0) - offset
		got := snap.evaluate(sub, sc)
		g.Expect(got.Violations).To(Equal(want.Violations), "offset %d", offset)
	}
}

func TestBreakGlass(t *testing.T) {
	glass := cluster("glass", `{allowBreakGlass: true, images: {allow: ["ghcr.io/acme/**"]}}`)
	run(t, []evalCase{
		{
			name:       "a policy that allows break-glass admits a Pod that asks for it, with a warning",
			policies:   []string{glass},
			images:     containers("quay.io/x/y:1"),
			breakGlass: true,
			allowed:    true,
			want:       []string{`Warn spec.containers[0].image: image "quay.io/x/y:1" is not allowed by ClusterImagePolicy "glass": it matches no pattern in images.allow; admitted by break-glass`},
		},
		{
			name:     "without the request the policy denies",
			policies: []string{glass},
			images:   containers("quay.io/x/y:1"),
			want:     []string{`Enforce spec.containers[0].image: image "quay.io/x/y:1" is not allowed by ClusterImagePolicy "glass": it matches no pattern in images.allow`},
		},
		{
			name:       "a policy that does not allow break-glass still denies",
			policies:   []string{glass, noLatest},
			images:     containers("ghcr.io/acme/app:latest"),
			breakGlass: true,
			want:       []string{`Enforce spec.containers[0].image: image "ghcr.io/acme/app:latest" is not allowed by ClusterImagePolicy "no-latest": its tag "latest" is in tags.deny`},
		},
		{
			name:       "an invalid policy that allows break-glass can be broken through",
			policies:   []string{cluster("broken", `{allowBreakGlass: true, mode: Block, requireDigest: true}`)},
			images:     containers("nginx"),
			breakGlass: true,
			allowed:    true,
			want:       []string{`Warn spec: the Pod is not allowed by ClusterImagePolicy "broken": the policy is invalid, so it refuses every Pod it may cover until it is fixed: spec.mode: "Block" is not Enforce, Warn or Audit; admitted by break-glass`},
		},
	})
}

func TestBreakGlassAnnotations(t *testing.T) {
	g := NewWithT(t)
	for _, tc := range []struct {
		annotations map[string]string
		want        bool
	}{
		{map[string]string{"alpha.image-policy.k8s.io/break-glass": "true"}, true},
		{map[string]string{"mycorp.image-policy.k8s.io/break-glass": "true"}, true},
		{map[string]string{"alpha.image-policy.k8s.io/break-glass": "yes"}, false},
		{map[string]string{".image-policy.k8s.io/break-glass": "true"}, false},
		{map[string]string{"image-policy.k8s.io/break-glass": "true"}, false},
		{map[string]string{"alpha.image-policy.k8s.io/failed-open": "true"}, false},
		{map[string]string{"break-glass": "true"}, false},
		{nil, false},
	} {
		g.Expect(BreakGlassRequested(tc.annotations)).To(Equal(tc.want), "%v", tc.annotations)
	}

	cps, nps := policies(t, cluster("glass", `{allowBreakGlass: true, images: {allow: ["ghcr.io/acme/**"]}}`))
	d := Compile(cps, nps).Evaluate(&Subject{Namespace: "a", Images: containers("quay.io/x:1"), BreakGlass: true})
	g.Expect(d.Outcome()).To(Equal(DecisionAllowedByBreakGlass))
	g.Expect(d.AuditAnnotations()).To(Equal(map[string]string{
		AnnotationDecision: DecisionAllowedByBreakGlass, AnnotationPolicies: "Warn:ClusterImagePolicy/glass", AnnotationBreakGlass: "ClusterImagePolicy/glass",
	}))
}

func TestPodLabelsUnknown(t *testing.T) {
	webOnly := cluster("web-only", `{podSelector: {matchLabels: {app: web}}, images: {allow: ["ghcr.io/acme/**"]}}`)
	run(t, []evalCase{
		{
			name:      "with labels, a podSelector that does not match skips the policy",
			policies:  []string{webOnly},
			podLabels: map[string]string{"app": "db"},
			images:    containers("quay.io/x:1"),
			allowed:   true,
		},
		{
			name:       "without labels (ImagePolicyWebhook), the policy applies rather than being skipped",
			policies:   []string{webOnly},
			podUnknown: true,
			images:     containers("quay.io/x:1"),
			want:       []string{`Enforce spec.containers[0].image: image "quay.io/x:1" is not allowed by ClusterImagePolicy "web-only": it matches no pattern in images.allow`},
		},
		{
			name:       "and still admits what it allows",
			policies:   []string{webOnly},
			podUnknown: true,
			images:     containers("ghcr.io/acme/x:1"),
			allowed:    true,
		},
	})
}

// FirstOfPolicy counts each refusing policy once however many images break it, and in
// linear time (it was quadratic, 3.9 ms for a Pod that 1,000 policies refuse).
func TestFirstOfPolicy(t *testing.T) {
	g := NewWithT(t)
	cps, nps := policies(t, trusted, noLatest)
	snap := Compile(cps, nps)
	d := snap.Evaluate(&Subject{Namespace: "a", Images: containers("quay.io/x:1", "nginx", "quay.io/y:latest", "ghcr.io/acme/a:1")})
	var firsts []string
	for i := range d.Violations {
		if d.FirstOfPolicy(i) {
			firsts = append(firsts, d.Violations[i].Policy.String())
		}
	}
	g.Expect(len(d.Violations)).To(BeNumerically(">", 3))
	g.Expect(firsts).To(ConsistOf("ClusterImagePolicy/trusted", "ClusterImagePolicy/no-latest"))
	g.Expect(d.AuditAnnotations()).To(HaveKeyWithValue(AnnotationPolicies, "Enforce:ClusterImagePolicy/no-latest,Enforce:ClusterImagePolicy/trusted"))
}

// Class 1 of issue 15: a string the runtime may take as an image ID is refused by every
// covering policy, whatever its patterns: an allow-list of all of Docker Hub's official images
// included, which reads sha256:... as the repository library/sha256.
func TestImageIDsAreRefused(t *testing.T) {
	const reason = `it could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)`
	hub := cluster("hub", `{images: {allow: ["docker.io/library/*"]}}`)
	anything := cluster("anything", `{images: {allow: ["**", "*/**", "docker.io/**"]}}`)
	onlyTags := cluster("no-latest", `{tags: {deny: [latest]}}`)
	var cases []evalCase
	for _, id := range []string{
		"sha256:" + strings.Repeat("0", 64), "sha256:4f1d", "sha256:a", "sha384:" + strings.Repeat("1", 96), "sha512:cafe", "blake3:00",
		"sha256:4f1d@" + digestA,
	} {
		cases = append(cases, evalCase{
			name: id, policies: []string{anything, hub, onlyTags}, images: containers(id),
			want: []string{
				`Enforce spec.containers[0].image: image "` + id + `" is not allowed by ClusterImagePolicy "anything": ` + reason,
				`Enforce spec.containers[0].image: image "` + id + `" is not allowed by ClusterImagePolicy "hub": ` + reason,
				`Enforce spec.containers[0].image: image "` + id + `" is not allowed by ClusterImagePolicy "no-latest": ` + reason,
			},
		})
	}
	cases = append(cases,
		evalCase{name: "a repository called sha256 is named as one", policies: []string{hub}, images: containers("library/sha256:4f1d"), allowed: true},
		evalCase{name: "no covering policy, no decision", policies: []string{namespaced("other", "x", `{tags: {deny: [latest]}}`)}, images: containers("sha256:4f1d"), allowed: true},
	)
	run(t, cases)
}

// Class 3 of issue 15: another spelling of the same registry endpoint meets the same deny-list
// and exemption; the message quotes the image as written and names the canonical form.
func TestRegistrySpellingsMeetTheSameRules(t *testing.T) {
	noHub := cluster("no-hub", `{images: {deny: ["docker.io/**"]}}`)
	noEvil := cluster("no-evil", `{images: {deny: ["ghcr.io/evil/**"]}}`)
	noLocal := cluster("no-local", `{images: {deny: ["[::1]:5000/**"]}}`)
	denied := func(img, normalized, policy, pattern string) string {
		return `Enforce spec.containers[0].image: image "` + img + `" (` + normalized + `) is not allowed by ClusterImagePolicy "` + policy + `": it matches images.deny[0] "` + pattern + `"`
	}
	run(t, []evalCase{
		{name: "registry-1.docker.io", policies: []string{noHub}, images: containers("registry-1.docker.io/cryptominer/xmrig:6.21"),
			want: []string{denied("registry-1.docker.io/cryptominer/xmrig:6.21", "docker.io/cryptominer/xmrig:6.21", "no-hub", "docker.io/**")}},
		{name: "registry.hub.docker.com", policies: []string{noHub}, images: containers("registry.hub.docker.com/library/nginx:1"),
			want: []string{denied("registry.hub.docker.com/library/nginx:1", "docker.io/library/nginx:1", "no-hub", "docker.io/**")}},
		{name: "index.docker.io with its port", policies: []string{noHub}, images: containers("index.docker.io:443/nginx:1"),
			want: []string{denied("index.docker.io:443/nginx:1", "docker.io/library/nginx:1", "no-hub", "docker.io/**")}},
		{name: "explicit default port", policies: []string{noEvil}, images: containers("ghcr.io:443/evil/x:1"),
			want: []string{denied("ghcr.io:443/evil/x:1", "ghcr.io/evil/x:1", "no-evil", "ghcr.io/evil/**")}},
		{name: "port with leading zeros", policies: []string{noEvil}, images: containers("ghcr.io:00443/evil/x:1"),
			want: []string{denied("ghcr.io:00443/evil/x:1", "ghcr.io/evil/x:1", "no-evil", "ghcr.io/evil/**")}},
		{name: "IPv6 written out", policies: []string{noLocal}, images: containers("[0:0:0:0:0:0:0:1]:5000/app:1"),
			want: []string{denied("[0:0:0:0:0:0:0:1]:5000/app:1", "[::1]:5000/app:1", "no-local", "[::1]:5000/**")}},
		{name: "a deny pattern in another spelling means the same endpoint", policies: []string{cluster("no-evil-443", `{images: {deny: ["ghcr.io:443/evil/**"]}}`)}, images: containers("ghcr.io/evil/x:1"),
			want: []string{`Enforce spec.containers[0].image: image "ghcr.io/evil/x:1" is not allowed by ClusterImagePolicy "no-evil-443": it matches images.deny[0] "ghcr.io:443/evil/**"`}},
		{name: "an exemption in another spelling exempts the same images", policies: []string{cluster("pinned", `{requireDigest: true, exemptImages: ["registry-1.docker.io/library/nginx"]}`)}, images: containers("nginx:1"), allowed: true},
		{name: "another port is another registry", policies: []string{noEvil}, images: containers("ghcr.io:444/evil/x:1"), allowed: true},
		{name: "Docker Hub on another port is not Docker Hub", policies: []string{noHub}, images: containers("docker.io:5000/acme/app:1"), allowed: true},
	})
}

// Class 4 of issue 15: nothing a requester writes reaches a message unescaped.
func TestMessagesHaveNoControlCharacters(t *testing.T) {
	snap := Compile([]v1alpha1.ClusterImagePolicy{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.ImagePolicySpec{Tags: v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}}}}}, nil)
	for _, img := range []string{"evil.io/X\n\nNOTE all images verified", "evil.io/x\u202e:1", "a\r\nb", "\x1b[31mred", "bad\xffutf8/x"} {
		d := snap.Evaluate(&Subject{Namespace: "a", Images: containers(img)})
		if len(d.Violations) == 0 {
			t.Fatalf("%q was admitted", img)
		}
		for _, m := range d.Messages(v1alpha1.ModeEnforce) {
			if Printable(m) != m {
				t.Errorf("the message for %q has characters that are not printable: %q", img, m)
			}
			if !strings.HasPrefix(m, "spec.containers[0].image: image ") {
				t.Errorf("message %q", m)
			}
		}
	}
}

// Class 2 of issue 15: a Pod created outside a podSelector and then relabelled into it meets
// the policy with every image it has, not only the changed ones.
func TestRelabelIntoPodSelector(t *testing.T) {
	payments := cluster("payments", `{podSelector: {matchLabels: {app: payments}}, images: {allow: ["ghcr.io/acme/**"]}}`)
	paymentsNS := cluster("payments-prod", `{namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: payments}}, images: {allow: ["ghcr.io/acme/**"]}}`)
	local := namespaced("team-a", "local", `{podSelector: {matchExpressions: [{key: tier, operator: In, values: [pci]}]}, tags: {deny: [latest]}}`)
	everyone := cluster("everyone", `{images: {deny: ["quay.io/**"]}}`)
	backdoor := `image "docker.io/attacker/backdoor:1" is not allowed by ClusterImagePolicy "payments": it matches no pattern in images.allow`
	cases := []struct {
		name               string
		policies           []string
		oldLabels, labels  map[string]string
		old, now           []string
		workload, nsUnknow bool
		nsLabels           map[string]string
		want               []string
	}{
		{name: "relabelled into the selector: the unchanged image is checked", policies: []string{payments},
			oldLabels: map[string]string{"app": "tmp"}, labels: map[string]string{"app": "payments"},
			old: []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"},
			want: []string{"Enforce spec.containers[0].image: " + backdoor}},
		{name: "labels added where there were none", policies: []string{payments},
			labels: map[string]string{"app": "payments"},
			old:    []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"},
			want: []string{"Enforce spec.containers[0].image: " + backdoor}},
		{name: "relabelled and an image changed: each image once", policies: []string{payments},
			oldLabels: map[string]string{"app": "tmp"}, labels: map[string]string{"app": "payments"},
			old: []string{"docker.io/attacker/backdoor:1", "ghcr.io/acme/a:1"}, now: []string{"docker.io/attacker/backdoor:1", "quay.io/x/y:2"},
			want: []string{
				`Enforce spec.containers[1].image: image "quay.io/x/y:2" is not allowed by ClusterImagePolicy "payments": it matches no pattern in images.allow`,
				"Enforce spec.containers[0].image: " + backdoor,
			}},
		{name: "already covered before: a label edit is not a new check", policies: []string{payments},
			oldLabels: map[string]string{"app": "payments"}, labels: map[string]string{"app": "payments", "v": "2"},
			old: []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"}},
		{name: "relabelled out of the selector", policies: []string{payments},
			oldLabels: map[string]string{"app": "payments"}, labels: map[string]string{"app": "tmp"},
			old: []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"}},
		{name: "a policy without podSelector covered it all along", policies: []string{everyone},
			oldLabels: map[string]string{"app": "tmp"}, labels: map[string]string{"app": "payments"},
			old: []string{"quay.io/legacy/x:1"}, now: []string{"quay.io/legacy/x:1"}},
		{name: "an ImagePolicy with a set-based selector", policies: []string{local},
			oldLabels: map[string]string{"tier": "web"}, labels: map[string]string{"tier": "pci"},
			old: []string{"nginx"}, now: []string{"nginx"},
			want: []string{`Enforce spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ImagePolicy "local": it has neither tag nor digest, so it runs as "latest", which is in tags.deny`}},
		{name: "namespaceSelector still decides", policies: []string{paymentsNS}, nsLabels: map[string]string{"env": "dev"},
			oldLabels: map[string]string{"app": "tmp"}, labels: map[string]string{"app": "payments"},
			old: []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"}},
		{name: "namespace labels unknown: refused, retry", policies: []string{paymentsNS}, nsUnknow: true,
			oldLabels: map[string]string{"app": "tmp"}, labels: map[string]string{"app": "payments"},
			old: []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"},
			want: []string{`Enforce metadata.namespace: the Pod is not allowed by ClusterImagePolicy "payments-prod": the labels of namespace "team-a" are not known yet, so whether the policy applies cannot be told; retry`}},
		{name: "a workload template relabelled", policies: []string{payments}, workload: true,
			oldLabels: map[string]string{"app": "tmp"}, labels: map[string]string{"app": "payments"},
			old: []string{"docker.io/attacker/backdoor:1"}, now: []string{"docker.io/attacker/backdoor:1"},
			want: []string{"Enforce spec.containers[0].image: " + backdoor}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			cps, nps := policies(t, c.policies...)
			nsLabels := map[string]string{"kubernetes.io/metadata.name": "team-a"}
			for k, v := range c.nsLabels {
				nsLabels[k] = v
			}
			sub := Subject{Namespace: "team-a", NamespaceLabels: nsLabels, NamespaceUnknown: c.nsUnknow, PodLabels: c.labels, Workload: c.workload, Images: containers(c.now...)}
			sub.Updated(containers(c.old...), c.oldLabels)
			d := Compile(cps, nps).Evaluate(&sub)
			g.Expect(lines(&d)).To(Equal(orEmpty(c.want)))
		})
	}
}

// A pattern that is a registry host alone names a Docker Hub image: the policy is in force as
// written, with a warning that says what was surely meant.
func TestBareHostPatternsWarn(t *testing.T) {
	cps, _ := policies(t, cluster("hosts", `{images: {allow: ["ghcr.io/acme/**", "redis:6", "nginx"], deny: ["evil.io", "registry.corp:5000", "localhost"]}}`))
	snap := CompileWith(cps, nil, Options{})
	ref := Ref{Kind: KindClusterImagePolicy, Name: "hosts"}
	if e := snap.PolicyError(ref); e != "" {
		t.Fatal(e)
	}
	got := strings.Join(snap.PolicyWarnings(ref), "\n")
	want := strings.Join([]string{
		`spec.images.deny[0]: "evil.io" names the Docker Hub image docker.io/library/evil.io, not the registry evil.io: did you mean "evil.io/**"?`,
		`spec.images.deny[1]: "registry.corp:5000" names the Docker Hub image docker.io/library/registry.corp:5000, not the registry registry.corp:5000: did you mean "registry.corp:5000/**"?`,
		`spec.images.deny[2]: "localhost" names the Docker Hub image docker.io/library/localhost, not the registry localhost: did you mean "localhost/**"?`,
	}, "\n")
	if got != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, want)
	}
}
