package imageref

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"sigs.k8s.io/yaml"
)

var fuzzSeeds = []string{
	"nginx", "nginx:1.27", "library/nginx", "docker.io/library/nginx:latest", "index.docker.io/acme/app",
	"ghcr.io/acme/*", "ghcr.io/acme/**", "ghcr.io/**/base:1.0", "registry.corp:5000/team/app@" + digestA,
	"localhost/app", "[::1]:5000/app", "10.0.0.1/app", "DOCKER.IO/nginx", "Registry.Corp/App", "*.corp/x",
	"**", "*", "a**b", "nginx ", "", "nginx@sha256:abc", "alpine:3.19@" + digestA, "a/b/c/d/e/f:tag",
	"ghcr.io/acme/app-*", "x:y:z", "@", ":", "/", "a//b", "a/./b", "a__b", "a---b", "UPPER",
}

// FuzzParse is differential: Parse must agree with reference.ParseNormalizedNamed on every
// input, accepting and refusing the same strings and printing the same normalized form.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		named, rerr := reference.ParseNormalizedNamed(s)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Parse(%q) error %v, reference says %v", s, err, rerr)
		}
		if err != nil {
			return
		}
		if r.Normalized != named.String() {
			t.Fatalf("Parse(%q) = %q, reference says %q", s, r.Normalized, named.String())
		}
		if r.Host != strings.ToLower(r.Host) {
			t.Fatalf("Parse(%q): host %q is not lowercase", s, r.Host)
		}
	})
}

// celMatches finds the regular expressions of CEL matches() calls.
var celMatches = regexp.MustCompile(`matches\('([^']*)'\)`)

// crdPatternRules reads the CEL rules of ImagePattern from the generated CRD, so that the
// fuzzer holds the apiserver's validation and the Go parser to the same answers.
func crdPatternRules(t testing.TB) (grammar, hostGlob1, hostGlob2, globStar *regexp.Regexp) {
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
	if len(found) != 4 {
		t.Fatalf("want the 4 regular expressions of ImagePattern in the CRD, found %d", len(found))
	}
	return regexp.MustCompile(found[0]), regexp.MustCompile(found[1]), regexp.MustCompile(found[2]), regexp.MustCompile(found[3])
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

func celAccepts(s string, grammar, hostGlob1, hostGlob2, globStar *regexp.Regexp) bool {
	return len(s) >= 1 && len(s) <= 512 && grammar.MatchString(s) &&
		(!hostGlob1.MatchString(s) || !hostGlob2.MatchString(s)) && !globStar.MatchString(s)
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
	grammar, h1, h2, gs := crdPatternRules(f)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		// Known, documented differences, where the schema accepts what the parser refuses (the
		// policy then reports Ready=False and fails closed): names over 255 characters once
		// normalized, 64-hex-digit names (image IDs), and bracketed IPv6-like hosts, which the
		// parser takes as a host only when the first component has ":" or an uppercase letter.
		if len(s) > 200 || imageID.MatchString(s) || strings.Contains(s, reservedText) || strings.HasPrefix(s, "[") {
			return
		}
		if cel := celAccepts(s, grammar, h1, h2, gs); cel != (err == nil) {
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
