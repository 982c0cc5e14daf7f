// Package docs checks the user documentation (README.md and docs/): every YAML example is a
// valid object, and every relative link leads somewhere.
package docs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/crdschema"
	"github.com/imagegate/imagegate/internal/policy"
)

const root = "../.."

// pages are the Markdown files whose examples and links are checked.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	out := []string{filepath.Join(root, "README.md"), filepath.Join(root, "CONTRIBUTING.md"), filepath.Join(root, "SECURITY.md")}
	return append(out, docs...)
}

// block is a fenced code block: its language, first line and text (its indentation, inside
// a list item, removed).
type block struct {
	lang string
	line int
	text string
}

var fence = regexp.MustCompile("^( *)```(\\S*)")

// read reads a page and splits it.
func read(t *testing.T, path string) ([]block, []string) {
	t.Helper()
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return split(string(page))
}

// split returns the page's fenced blocks and its prose (the lines outside them).
func split(page string) (blocks []block, prose []string) {
	var cur *block
	indent := ""
	for i, line := range strings.Split(page, "\n") {
		m := fence.FindStringSubmatch(line)
		switch {
		case cur == nil && m != nil:
			cur, indent = &block{lang: m[2], line: i + 1}, m[1]
		case cur != nil && m != nil && m[1] == indent && m[2] == "":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(line, indent) + "\n"
		default:
			prose = append(prose, line)
		}
	}
	return blocks, prose
}

// Every YAML example in the docs is what a user may paste: it parses, and each imagegate
// object in it passes the CRD schema (the CLI's offline validation, in the apiserver's
// wording) and compiles in the engine. Other Kubernetes objects must at least name their
// apiVersion and kind.
func TestYAMLExamplesAreValid(t *testing.T) {
	validator, err := crdschema.New()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, path := range pages(t) {
		blocks, _ := read(t, path)
		for _, b := range blocks {
			if b.lang != "yaml" && b.lang != "yml" {
				continue
			}
			where := fmt.Sprintf("%s:%d", strings.TrimPrefix(path, root+"/"), b.line)
			checked += checkYAML(t, where, b.text, validator)
		}
	}
	if checked == 0 {
		t.Fatal("no imagegate object found in the docs' YAML: the checker reads nothing")
	}
	t.Logf("%d imagegate objects checked", checked)
}

// checkYAML checks one block's documents and returns how many imagegate objects it held.
func checkYAML(t *testing.T, where, text string, validator *crdschema.Validator) int {
	t.Helper()
	n := 0
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Errorf("%s: document %d: %v", where, doc, err)
			return n
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			t.Errorf("%s: document %d does not parse: %v", where, doc, err)
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			continue // a fragment, such as a CI step list: parsing is all there is to check
		}
		_, hasAPIVersion := m["apiVersion"]
		_, hasKind := m["kind"]
		if !hasAPIVersion && !hasKind {
			continue // not a Kubernetes object (a CI workflow, a values file): parsing is all there is to check
		}
		// Decoded again as the apiserver decodes: integers stay integers.
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			t.Errorf("%s: document %d: %v", where, doc, err)
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			t.Errorf("%s: document %d: %v", where, doc, err)
			continue
		}
		if obj.GetAPIVersion() == "" || obj.GetKind() == "" {
			t.Errorf("%s: document %d is an object without apiVersion and kind", where, doc)
			continue
		}
		if obj.GroupVersionKind().Group != v1alpha1.GroupVersion.Group {
			continue
		}
		n++
		for _, e := range validator.Validate(context.Background(), obj.DeepCopy()) {
			t.Errorf("%s: %s %q: %v", where, obj.GetKind(), obj.GetName(), e)
		}
		if problem := compileProblem(obj); problem != "" {
			t.Errorf("%s: %s %q does not compile: %s", where, obj.GetKind(), obj.GetName(), problem)
		}
	}
}

// compileProblem compiles one policy or exception with the engine (no trust material) and
// returns what it refuses.
func compileProblem(obj *unstructured.Unstructured) string {
	ref := policy.Ref{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
	switch obj.GetKind() {
	case policy.KindClusterImagePolicy:
		var p v1alpha1.ClusterImagePolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &p); err != nil {
			return err.Error()
		}
		return policy.CompileWith([]v1alpha1.ClusterImagePolicy{p}, nil, policy.Options{}).PolicyError(ref)
	case policy.KindImagePolicy:
		var p v1alpha1.ImagePolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &p); err != nil {
			return err.Error()
		}
		if p.Namespace == "" {
			p.Namespace = "default"
			ref.Namespace = "default"
		}
		return policy.CompileWith(nil, []v1alpha1.ImagePolicy{p}, policy.Options{}).PolicyError(ref)
	case policy.KindImagePolicyException:
		var e v1alpha1.ImagePolicyException
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &e); err != nil {
			return err.Error()
		}
		if e.Namespace == "" {
			e.Namespace = "default"
		}
		snap := policy.CompileWith(nil, nil, policy.Options{Exceptions: []v1alpha1.ImagePolicyException{e}})
		return snap.ExceptionError(policy.Ref{Kind: policy.KindImagePolicyException, Namespace: e.Namespace, Name: e.Name})
	}
	return ""
}

var link = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)

// Every relative link of the docs leads to a file of the repository, and every #anchor to a
// heading of the page it names.
func TestRelativeLinksResolve(t *testing.T) {
	checked := 0
	for _, path := range pages(t) {
		_, prose := read(t, path)
		for i, line := range prose {
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				file, anchor, _ := strings.Cut(target, "#")
				dest := path
				if file != "" {
					dest = filepath.Join(filepath.Dir(path), file)
				}
				where := fmt.Sprintf("%s (prose line %d)", strings.TrimPrefix(path, root+"/"), i+1)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: %v", where, target, err)
					continue
				}
				if anchor != "" && !hasAnchor(t, dest, anchor) {
					t.Errorf("%s: link %q: %s has no heading with that anchor", where, target, strings.TrimPrefix(dest, root+"/"))
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found: the checker reads nothing")
	}
	t.Logf("%d relative links checked", checked)
}

// hasAnchor reports whether the Markdown file has a heading whose GitHub anchor is anchor.
func hasAnchor(t *testing.T, file, anchor string) bool {
	t.Helper()
	if !strings.HasSuffix(file, ".md") {
		return false
	}
	_, prose := read(t, file)
	seen := map[string]int{}
	for _, line := range prose {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		slug := slugOf(strings.TrimLeft(line, "#"))
		if n := seen[slug]; n > 0 {
			seen[slug]++
			slug = fmt.Sprintf("%s-%d", slug, n)
		} else {
			seen[slug] = 1
		}
		if slug == anchor {
			return true
		}
	}
	return false
}

// slugOf is GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
func slugOf(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
