package imageref

import (
	"errors"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestParse(t *testing.T) {
	cases := []struct {
		in                                       string
		normalized, host, path, tag, digest, eff string
	}{
		{"nginx", "docker.io/library/nginx", "docker.io", "library/nginx", "", "", "latest"},
		{"library/nginx:1.27", "docker.io/library/nginx:1.27", "docker.io", "library/nginx", "1.27", "", "1.27"},
		{"index.docker.io/library/nginx", "docker.io/library/nginx", "docker.io", "library/nginx", "", "", "latest"},
		{"docker.io/nginx", "docker.io/library/nginx", "docker.io", "library/nginx", "", "", "latest"},
		{"DOCKER.IO/nginx", "docker.io/library/nginx", "docker.io", "library/nginx", "", "", "latest"},
		{"Registry.Corp:5000/team/app:v1", "registry.corp:5000/team/app:v1", "registry.corp:5000", "team/app", "v1", "", "v1"},
		{"localhost/app", "localhost/app", "localhost", "app", "", "", "latest"},
		{"localhost:5000/app", "localhost:5000/app", "localhost:5000", "app", "", "", "latest"},
		{"10.0.0.1:5000/app", "10.0.0.1:5000/app", "10.0.0.1:5000", "app", "", "", "latest"},
		{"[::1]:5000/app", "[::1]:5000/app", "[::1]:5000", "app", "", "", "latest"},
		{"alpine:3.19@" + digestA, "docker.io/library/alpine:3.19@" + digestA, "docker.io", "library/alpine", "3.19", digestA, ""},
		{"Foo/bar", "Foo/bar", "foo", "bar", "", "", "latest"},
		// A host that is an algorithm's name once lowercased keeps its case: sha256:5000/app
		// would be refused as an image ID.
		{"SHA256:5000/app", "SHA256:5000/app", "sha256:5000", "app", "", "", "latest"},
		{"shA256:0/0", "shA256:0/0", "sha256:0", "0", "", "", "latest"},
		{"Blake3:05000/app:1", "Blake3:05000/app:1", "blake3:5000", "app", "1", "", "1"},
		{"SHA256:443/app", "SHA256:443/app", "sha256", "app", "", "", "latest"},
		{"acme/app", "docker.io/acme/app", "docker.io", "acme/app", "", "", "latest"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			g := NewWithT(t)
			r, err := Parse(c.in)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(r).To(Equal(Reference{Normalized: c.normalized, Host: c.host, Path: c.path, Tag: c.tag, Digest: c.digest}))
			g.Expect(r.EffectiveTag()).To(Equal(c.eff))
		})
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"":                 "invalid reference format",
		"Nginx":            "invalid reference format: repository name (library/Nginx) must be lowercase",
		"ghcr.io/Acme/app": "invalid reference format: repository name (Acme/app) must be lowercase",
		"nginx ":           "invalid reference format",
		" nginx":           "invalid reference format",
		"nginx@sha256:abc": "invalid reference format", "nginx@sha256:" + strings.Repeat("a", 32): "invalid checksum digest length",
		"nginx:" + strings.Repeat("a", 129): "invalid reference format",
	}
	for in, want := range cases {
		t.Run(in, func(t *testing.T) {
			g := NewWithT(t)
			_, err := Parse(in)
			g.Expect(err).To(MatchError(want))
		})
	}
}

func TestParsePattern(t *testing.T) {
	cases := []struct {
		in, normalized, host, path, tag, digest string
	}{
		{"nginx", "docker.io/library/nginx", "docker.io", "library/nginx", "", ""},
		{"*", "docker.io/library/*", "docker.io", "library/*", "", ""},
		{"**", "docker.io/**", "docker.io", "**", "", ""},
		{"docker.io/**", "docker.io/**", "docker.io", "**", "", ""},
		{"index.docker.io/**", "docker.io/**", "docker.io", "**", "", ""},
		{"library/**", "docker.io/library/**", "docker.io", "library/**", "", ""},
		{"docker.io/*", "docker.io/library/*", "docker.io", "library/*", "", ""},
		{"ghcr.io/acme/*", "ghcr.io/acme/*", "ghcr.io", "acme/*", "", ""},
		{"ghcr.io/acme/**", "ghcr.io/acme/**", "ghcr.io", "acme/**", "", ""},
		{"ghcr.io/acme/app-*:v1", "ghcr.io/acme/app-*:v1", "ghcr.io", "acme/app-*", "v1", ""},
		{"Registry.Corp:5000/**", "registry.corp:5000/**", "registry.corp:5000", "**", "", ""},
		{"index.docker.io/acme/**", "docker.io/acme/**", "docker.io", "acme/**", "", ""},
		{"DOCKER.IO/nginx", "docker.io/library/nginx", "docker.io", "library/nginx", "", ""},
		{"*/app", "docker.io/*/app", "docker.io", "*/app", "", ""},
		{"Foo/bar", "Foo/bar", "foo", "bar", "", ""},
		{"SHA256:5000/**", "SHA256:5000/**", "sha256:5000", "**", "", ""},
		{"0_0.0/0", "0_0.0/0", "", "0_0.0/0", "", ""},
		{"nginx@" + digestA, "docker.io/library/nginx@" + digestA, "docker.io", "library/nginx", "", digestA},
		{"ghcr.io/**/base:1.0", "ghcr.io/**/base:1.0", "ghcr.io", "**/base", "1.0", ""},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			g := NewWithT(t)
			p, err := ParsePattern(c.in)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Normalized).To(Equal(c.normalized))
			g.Expect(p.Host).To(Equal(c.host))
			g.Expect(p.Path).To(Equal(c.path))
			g.Expect(p.Tag).To(Equal(c.tag))
			g.Expect(p.Digest).To(Equal(c.digest))
			g.Expect(p.Raw).To(Equal(c.in))
		})
	}
}

func TestParsePatternRejects(t *testing.T) {
	cases := map[string]string{
		"":                   "pattern is empty",
		"**.corp/app":        "a registry host cannot contain * or **: name the registry exactly, for example ghcr.io/acme/*",
		"*.corp/app":         "a registry host cannot contain * or **: name the registry exactly, for example ghcr.io/acme/*",
		"registry*:5000/app": "a registry host cannot contain * or **: name the registry exactly, for example ghcr.io/acme/*",
		"ghcr.io/acme/app**": "** must be a whole path segment, for example ghcr.io/acme/**",
		"ghcr.io/acme/***":   "** must be a whole path segment, for example ghcr.io/acme/**",
		"nginx:1.*":          "globs are not allowed in a tag or digest: a pattern matches one tag or one digest, or all of them when it has neither",
		"ghcr.io/Acme/*":     "invalid reference format: repository name (Acme/*) must be lowercase",
		"ghcr.io/acme/ app":  "invalid reference format",
		"nginx@sha256:abc":   "invalid reference format", "nginx@sha256:" + strings.Repeat("a", 32): "invalid checksum digest length",
		"ghcr.io/acme/-*":   "invalid reference format",
		"x/0imagegateglob0": `pattern contains the reserved text "imagegateglob"`,
		"ghcr.io//app":      "invalid reference format",
		"ghcr.io/acme/app/": "invalid reference format",
	}
	for in, want := range cases {
		t.Run(in, func(t *testing.T) {
			g := NewWithT(t)
			_, err := ParsePattern(in)
			g.Expect(err).To(MatchError(want))
		})
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, image string
		want           bool
	}{
		// Segment-aware globs.
		{"ghcr.io/acme/*", "ghcr.io/acme/app", true},
		{"ghcr.io/acme/*", "ghcr.io/acme/team/app", false},
		{"ghcr.io/acme/*", "ghcr.io/acmeevil/app", false},
		{"ghcr.io/acme/*", "ghcr.io/acme", false},
		{"ghcr.io/acme/**", "ghcr.io/acme/app", true},
		{"ghcr.io/acme/**", "ghcr.io/acme/team/app", true},
		{"ghcr.io/acme/**", "ghcr.io/acme", true},
		{"ghcr.io/acme/**", "ghcr.io/acmeevil/app", false},
		{"ghcr.io/**/base", "ghcr.io/base", true},
		{"ghcr.io/**/base", "ghcr.io/a/b/c/base", true},
		{"ghcr.io/**/base", "ghcr.io/a/b/c/base2", false},
		{"ghcr.io/**/x/**/y", "ghcr.io/x/x/x/z/y", true},
		{"ghcr.io/**/x/**/y", "ghcr.io/x/x/x/z/y/q", false},
		{"ghcr.io/acme/app-*", "ghcr.io/acme/app-web", true},
		{"ghcr.io/acme/app-*", "ghcr.io/acme/app", false},
		{"ghcr.io/acme/*-svc", "ghcr.io/acme/pay-svc", true},
		{"ghcr.io/acme/*-svc", "ghcr.io/acme/pay-svc2", false},
		{"ghcr.io/*/app", "ghcr.io/acme/app", true},
		{"ghcr.io/*/app", "ghcr.io/a/b/app", false},
		// Whole host, with port, case-insensitive.
		{"registry.corp/**", "registry.corp.evil.io/app", false},
		{"registry.corp/**", "registry.corp:5000/app", false},
		{"registry.corp:5000/**", "registry.corp:5000/app", true},
		{"registry.corp/**", "REGISTRY.CORP/app", true},
		{"registry.corp/**", "evil.io/registry.corp/app", false},
		{"docker.io/foo/*", "Foo/bar", false},
		{"foo/*", "Foo/bar", false},
		{"Foo/*", "foo.bar/x", false},
		{"FOO/*", "Foo/bar", true},
		// Docker Hub normalization on both sides.
		{"nginx", "docker.io/library/nginx", true},
		{"docker.io/library/nginx", "nginx", true},
		{"index.docker.io/library/nginx", "library/nginx:1.27", true},
		{"nginx", "acme/nginx", false},
		{"*", "nginx", true},
		{"*", "acme/app", false},
		{"docker.io/**", "nginx", true},
		// Tags and digests: the digest decides.
		{"nginx:1.27", "nginx:1.27", true},
		{"nginx:1.27", "nginx:1.28", false},
		{"nginx:latest", "nginx", true},
		{"nginx:1.27", "nginx:1.27@" + digestA, false},
		{"nginx@" + digestA, "nginx:anything@" + digestA, true},
		{"nginx@" + digestA, "nginx", false},
		{"nginx", "nginx@" + digestA, true},
	}
	for _, c := range cases {
		t.Run(c.pattern+" ~ "+c.image, func(t *testing.T) {
			g := NewWithT(t)
			p, err := ParsePattern(c.pattern)
			g.Expect(err).NotTo(HaveOccurred())
			r, err := Parse(c.image)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Match(&r)).To(Equal(c.want))
		})
	}
}

func TestMatchSegmentsIsPolynomial(t *testing.T) {
	// A pattern written to make a backtracking matcher explode must still be answered (the
	// test would time out otherwise) and correctly.
	g := NewWithT(t)
	segs := strings.Split(strings.Repeat("**/a/", 40)+"b", "/")
	path := strings.Repeat("a/", 120) + "c"
	g.Expect(MatchSegments(segs, path)).To(BeFalse())
	g.Expect(MatchSegments(segs, strings.Repeat("a/", 120)+"b")).To(BeTrue())
	g.Expect(matchSegment(strings.Repeat("*a", 60)+"b", strings.Repeat("a", 200))).To(BeFalse())
}

// Strings the container runtime may take as the ID of an image already on the node: refused,
// whatever patterns a policy has. Written from containerd's CRI image service (a digest, or an
// algorithm and a hex prefix looked up in its digest set).
func TestParseRefusesImageIDs(t *testing.T) {
	full := strings.Repeat("a", 64)
	for _, s := range []string{
		"sha256:" + full, "sha256:abc", "sha256:a", "sha384:" + strings.Repeat("b", 96), "sha512:cafe", "blake3:00",
		"sha256:abc@" + digestA, "sha256:latest",
	} {
		t.Run(s, func(t *testing.T) {
			_, err := Parse(s)
			if !errors.Is(err, ErrImageID) {
				t.Fatalf("Parse(%q) error %v, want ErrImageID", s, err)
			}
			if _, err := ParsePattern(s); err == nil {
				t.Fatalf("ParsePattern(%q) accepted an image ID", s)
			}
		})
	}
	// Named by repository: the same words are fine with a path or a registry.
	for _, s := range []string{"library/sha256:abc", "docker.io/library/sha256:abc", "ghcr.io/sha256:abc", "sha256", "sha256x:abc", "nginx@" + digestA} {
		if _, err := Parse(s); err != nil {
			t.Errorf("Parse(%q): %v", s, err)
		}
	}
	// A bare hex name never reaches the runtime as an ID: the kubelet adds :latest, and 64
	// digits do not parse.
	if _, err := Parse(full); err == nil {
		t.Errorf("Parse(%q) accepted a 64-digit name", full)
	}
}

// Spellings of one registry endpoint are one host, for images and patterns alike.
func TestCanonicalHost(t *testing.T) {
	for _, c := range []struct{ in, host, path string }{
		{"registry-1.docker.io/cryptominer/xmrig:6.21", "docker.io", "cryptominer/xmrig"},
		{"registry-1.docker.io/nginx", "docker.io", "library/nginx"},
		{"registry.hub.docker.com/acme/app", "docker.io", "acme/app"},
		{"index.docker.io:443/nginx", "docker.io", "library/nginx"},
		{"docker.io:443/acme/app", "docker.io", "acme/app"},
		{"REGISTRY-1.DOCKER.IO/acme/app", "docker.io", "acme/app"},
		{"docker.io:5000/acme/app", "docker.io:5000", "acme/app"},
		{"ghcr.io:443/evil/x:1", "ghcr.io", "evil/x"},
		{"ghcr.io:0443/evil/x", "ghcr.io", "evil/x"},
		{"registry.corp:05000/app", "registry.corp:5000", "app"},
		{"registry.corp:80/app", "registry.corp:80", "app"},
		{"registry.corp:000443/app", "registry.corp", "app"},
		{"registry.corp:00100000/app", "registry.corp:100000", "app"},
		{"[0:0:0:0:0:0:0:1]:5000/app", "[::1]:5000", "app"},
		{"[::0001]/app", "[::1]", "app"},
		{"[FE80::1]:443/app", "[fe80::1]", "app"},
		{"[::ffff:7f00:1]:5000/app", "127.0.0.1:5000", "app"},
		{"localhost:5000/app", "localhost:5000", "app"},
		{"Foo/bar", "foo", "bar"},
	} {
		t.Run(c.in, func(t *testing.T) {
			g := NewWithT(t)
			r, err := Parse(c.in)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect([]string{r.Host, r.Path}).To(Equal([]string{c.host, c.path}))
			p, err := ParsePattern(c.in)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect([]string{p.Host, p.Path}).To(Equal([]string{c.host, c.path}))
		})
	}
	g := NewWithT(t)
	deny, err := ParsePattern("ghcr.io:443/evil/**")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(deny.Normalized).To(Equal("ghcr.io/evil/**"), "a pattern means the canonical spelling")
	img, _ := Parse("ghcr.io/evil/x:1")
	g.Expect(deny.Match(&img)).To(BeTrue())
}

// Repository is what go-containerregistry must be given: it reparses to the same registry,
// even where the canonical Host alone would read as a Docker Hub path.
func TestRepositoryReparses(t *testing.T) {
	for in, want := range map[string]string{
		"0:443/0:1":                         "0:443/0",
		"Foo/bar@" + digestA:                "Foo/bar",
		"Foo:0443/bar":                      "Foo:0443/bar",
		"SHA512:5000/app:1":                 "SHA512:5000/app",
		"nginx:1.27":                        "docker.io/library/nginx",
		"ghcr.io:443/acme/app:1@" + digestA: "ghcr.io/acme/app",
		"registry.corp:5000/team/app":       "registry.corp:5000/team/app",
	} {
		r, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Repository(); got != want {
			t.Errorf("Parse(%q).Repository() = %q, want %q", in, got, want)
		}
		again, err := Parse(r.Repository())
		if err != nil || again.Host != r.Host || again.Path != r.Path {
			t.Errorf("%q: Repository %q reparses to %s/%s, not %s/%s", in, r.Repository(), again.Host, again.Path, r.Host, r.Path)
		}
	}
}

// A pattern is as long as the user wrote it: many globs in a short pattern compile (the
// schema takes it, so the engine must), and a path really over 255 characters does not.
func TestManyGlobsAreNotTooLong(t *testing.T) {
	p, err := ParsePattern("*/0*0*/**/**/**/**/*/**/**/**/**/*0*")
	if err != nil {
		t.Fatalf("ParsePattern: %v", err)
	}
	r, err := Parse("acme/0a0/x/y/z0")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Match(&r) {
		t.Errorf("pattern %q does not match %q", p.Raw, r.Normalized)
	}
	if _, err := ParsePattern("ghcr.io/" + strings.Repeat("a/", 127) + "**"); err == nil || !strings.Contains(err.Error(), "255") {
		t.Errorf("a 256-character path: %v", err)
	}
}
