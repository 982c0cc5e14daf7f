package imageref

import (
	"errors"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/test/utils/runtimeref"
)

var fuzzSeeds = []string{
	"nginx", "nginx:1.27", "library/nginx", "docker.io/library/nginx:latest", "index.docker.io/acme/app",
	"ghcr.io/acme/*", "ghcr.io/acme/**", "ghcr.io/**/base:1.0", "registry.corp:5000/team/app@" + digestA,
	"localhost/app", "[::1]:5000/app", "10.0.0.1/app", "DOCKER.IO/nginx", "Registry.Corp/App", "*.corp/x",
	"**", "*", "a**b", "nginx ", "", "nginx@sha256:abc", "alpine:3.19@" + digestA, "a/b/c/d/e/f:tag",
	"ghcr.io/acme/app-*", "x:y:z", "@", ":", "/", "a//b", "a/./b", "a__b", "a---b", "UPPER",
}

// FuzzParse holds Parse to the runtime's rules: it refuses exactly the strings the runtime may
// take as an image ID, accepts and refuses what the runtime's parser does otherwise, names the
// endpoint and repository the runtime pulls, and spells each endpoint one way only (the
// canonical host is a fixed point, and the normalized form reparses to itself).
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > MaxReferenceLength {
			return
		}
		r, err := Parse(s)
		v, rerr := runtimeref.View(s)
		if v.ImageID {
			if !errors.Is(err, ErrImageID) {
				t.Fatalf("Parse(%q) = %+v, %v: the runtime may take it as an image ID", s, r, err)
			}
			return
		}
		if errors.Is(rerr, runtimeref.ErrUnreachable) {
			return // nothing is pulled, so nothing can get past a rule
		}
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Parse(%q) error %v, the runtime's parser says %v", s, err, rerr)
		}
		if err != nil {
			return
		}
		if got := runtimeref.EndpointOf(r.Host); got != v.Endpoint || r.Path != v.Repository {
			t.Fatalf("Parse(%q) = host %q (endpoint %s) path %q; the runtime pulls %s/%s", s, r.Host, got, r.Path, v.Endpoint, v.Repository)
		}
		if h, p := CanonicalHost(r.Host, r.Path); h != r.Host || p != r.Path {
			t.Fatalf("Parse(%q): host %q is not canonical (%q)", s, r.Host, h)
		}
		again, err := Parse(r.Normalized)
		if err != nil || again != r {
			t.Fatalf("Parse(%q) normalizes to %q, which parses to %+v (%v)", s, r.Normalized, again, err)
		}
	})
}

// respell writes the registry host of s another way that reaches the same endpoint, by
// variant: case, an explicit :443, leading zeros in the port, another of Docker Hub's names,
// an IPv6 address written out in full.
func respell(host string, variant uint8) string {
	name, port := host, ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		name, port = host[:i], host[i+1:]
	}
	switch variant % 5 {
	case 0:
		name = strings.ToUpper(name)
	case 1:
		if port == "" {
			port = "443"
		}
	case 2:
		if port != "" {
			port = "00" + port
		}
	case 3:
		if name == "docker.io" && port == "" {
			name = []string{"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}[variant/5%3]
		}
	case 4:
		if strings.HasPrefix(name, "[") {
			if a, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil && a.Is6() {
				name = "[" + a.StringExpanded() + "]"
			}
		}
	}
	if port != "" {
		return name + ":" + port
	}
	return name
}

// FuzzSameEndpoint writes the host of an image another way that reaches the same endpoint:
// the image and the pattern made from it must parse to the same host and path, so that a
// deny-list or an exemption cannot be dodged (or missed) by spelling.
func FuzzSameEndpoint(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s, uint8(0))
	}
	f.Add("registry-1.docker.io/cryptominer/xmrig:6.21", uint8(3))
	f.Add("ghcr.io:443/evil/x:1", uint8(1))
	f.Add("[0:0:0:0:0:0:0:1]:5000/app", uint8(4))
	f.Fuzz(func(t *testing.T, s string, variant uint8) {
		r, err := Parse(s)
		if err != nil || r.Host == "" {
			return
		}
		host := r.Host
		if !strings.ContainsAny(host, ".:[") && host != "localhost" {
			// A host only by its uppercase letters, or by a default port the canonical form
			// drops (0:443): its bare lowercase spelling is Docker Hub's. The runtime reaches
			// it by uppercase letters when it has some, else only with its port.
			if up := strings.ToUpper(host); up != host {
				host = up
			} else {
				host += ":443"
			}
		}
		other := respell(host, variant) + "/" + r.Path
		if r.Tag != "" {
			other += ":" + r.Tag
		}
		if r.Digest != "" {
			other += "@" + r.Digest
		}
		r2, err := Parse(other)
		if err != nil {
			return // a respelling the grammar refuses (an uppercase IPv6 bracket) is no bypass
		}
		if r2.Host != r.Host || r2.Path != r.Path {
			t.Fatalf("%q and %q reach the same endpoint, but parse to %s/%s and %s/%s", s, other, r.Host, r.Path, r2.Host, r2.Path)
		}
		p, perr := ParsePattern(other)
		if perr == nil && !p.Match(&r) {
			t.Fatalf("pattern %q does not match %q, the same image", other, s)
		}
	})
}

// celMatches finds the regular expressions of CEL matches() calls.
var celMatches = regexp.MustCompile(`matches\('([^']*)'\)`)

// crdPatternRules reads the CEL rules of ImagePattern from the generated CRD, so that the
// fuzzer holds the apiserver's validation and the Go parser to the same answers.
func crdPatternRules(t testing.TB) (grammar, hostGlob1, hostGlob2, globStar, imageIDRule *regexp.Regexp) {
	t.Helper()
	b, err := os.ReadFile("../../config/crd/bases/imagegate.io_clusterimagepolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	// The allow list's items hold the rules of ImagePattern, in the order of the markers.
	var found []string
	for _, rule := range rulesAt(crd, "spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec",
		"properties", "images", "properties", "allow", "items", "x-kubernetes-validations") {
		for _, m := range celMatches.FindAllStringSubmatch(rule, -1) {
			found = append(found, m[1])
		}
	}
	if len(found) != 5 {
		t.Fatalf("want the 5 regular expressions of ImagePattern in the CRD, found %d", len(found))
	}
	return regexp.MustCompile(found[0]), regexp.MustCompile(found[1]), regexp.MustCompile(found[2]), regexp.MustCompile(found[3]), regexp.MustCompile(found[4])
}

func rulesAt(v any, path ...any) []string {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	var rules []string
	for _, r := range v.([]any) {
		rules = append(rules, r.(map[string]any)["rule"].(string))
	}
	return rules
}

func celAccepts(s string, grammar, hostGlob1, hostGlob2, globStar, imageIDRule *regexp.Regexp) bool {
	return len(s) >= 1 && len(s) <= 512 && grammar.MatchString(s) &&
		(!hostGlob1.MatchString(s) || !hostGlob2.MatchString(s)) && !globStar.MatchString(s) && !imageIDRule.MatchString(s)
}

// imageID is a 64-hex-digit name, which the parser refuses as an image ID.
var imageID = regexp.MustCompile(`^[a-f0-9]{64}`)

// FuzzParsePattern checks that ParsePattern never panics, that what it accepts is stable
// (its normalized form parses to itself), and that it accepts exactly what the CRD's CEL rules
// accept, so that a policy the apiserver takes always compiles.
func FuzzParsePattern(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	grammar, h1, h2, gs, id := crdPatternRules(f)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		// Known, documented differences, where the schema accepts what the parser refuses (the
		// policy then reports Ready=False and fails closed): names over 255 characters once
		// normalized, 64-hex-digit names (image IDs), and bracketed IPv6-like hosts, which the
		// parser takes as a host only when the first component has ":" or an uppercase letter.
		if len(s) > 200 || imageID.MatchString(s) || strings.Contains(s, reservedText) || strings.HasPrefix(s, "[") {
			return
		}
		if cel := celAccepts(s, grammar, h1, h2, gs, id); cel != (err == nil) {
			t.Fatalf("pattern %q: CEL accepts=%v, ParsePattern error=%v", s, cel, err)
		}
		if err != nil {
			return
		}
		again, err := ParsePattern(p.Normalized)
		if err != nil || again.Normalized != p.Normalized {
			t.Fatalf("pattern %q normalizes to %q, which reparses to %q (%v)", s, p.Normalized, again.Normalized, err)
		}
	})
}

// FuzzMatchSegments checks the matcher against a plain recursive reference implementation.
func FuzzMatchSegments(f *testing.F) {
	f.Add("a/**/b", "a/x/y/b")
	f.Add("**/x*y/**", "q/xzzy/r")
	f.Add("*", "a/b")
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if pattern == "" || path == "" || strings.Contains(path, "//") || strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
			return
		}
		segs := strings.Split(pattern, "/")
		for _, s := range segs {
			if s == "" || (strings.Contains(s, "**") && s != "**") {
				return
			}
		}
		if got, want := MatchSegments(segs, path), slowMatch(segs, strings.Split(path, "/")); got != want {
			t.Fatalf("MatchSegments(%q, %q) = %v, want %v", pattern, path, got, want)
		}
	})
}

func slowMatch(segs, path []string) bool {
	if len(segs) == 0 {
		return len(path) == 0
	}
	if segs[0] == "**" {
		for i := 0; i <= len(path); i++ {
			if slowMatch(segs[1:], path[i:]) {
				return true
			}
		}
		return false
	}
	if len(path) == 0 {
		return false
	}
	return slowSegment(segs[0], path[0]) && slowMatch(segs[1:], path[1:])
}

func slowSegment(pat, s string) bool {
	if pat == "" {
		return s == ""
	}
	if pat[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if slowSegment(pat[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	return s != "" && s[0] == pat[0] && slowSegment(pat[1:], s[1:])
}
