package crdschema_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/internal/crdschema"
)

func load(t *testing.T, path string) (*unstructured.Unstructured, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "# error: "); ok {
			want = rest
		}
	}
	// Decoded as the apiserver decodes: integers stay integers.
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	// kubectl puts a namespaced object without one in the context's namespace.
	if obj.GetKind() == "ImagePolicy" && obj.GetNamespace() == "" {
		obj.SetNamespace("default")
	}
	return obj, want
}

// The corpus the envtest suite checks against the real apiserver: the offline validator
// must give the apiserver's message for each invalid policy and accept each valid one.
func TestPolicyCorpusAsTheAPIServer(t *testing.T) {
	v, err := crdschema.New()
	if err != nil {
		t.Fatal(err)
	}
	invalid, _ := filepath.Glob("../../test/policies/invalid/*.yaml")
	valid, _ := filepath.Glob("../../test/policies/valid/*.yaml")
	if len(invalid) < 10 || len(valid) == 0 {
		t.Fatalf("corpus not found: %d invalid, %d valid", len(invalid), len(valid))
	}
	for _, f := range invalid {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj, want := load(t, f)
			if want == "" {
				t.Fatal("no # error: line")
			}
			errs := v.Validate(context.Background(), obj)
			if !strings.Contains(errs.ToAggregate().Error(), want) {
				t.Errorf("errors %q\ndo not contain the apiserver's %q", errs.ToAggregate(), want)
			}
		})
	}
	for _, f := range valid {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj, _ := load(t, f)
			if errs := v.Validate(context.Background(), obj); len(errs) > 0 {
				t.Errorf("valid policy refused: %v", errs)
			}
		})
	}
}
