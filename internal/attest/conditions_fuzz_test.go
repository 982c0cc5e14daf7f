package attest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// FuzzConditions feeds arbitrary predicate and subject bytes to rules with conditions of the
// kinds users write (field tests, comprehensions, string functions, has()). Whatever the
// bytes: no panic, an answer within the time bound, and a statement is admitted only when
// every condition is true of it: one whose predicate is not a JSON object, or lacks a field a
// condition reads without has(), is refused.
func FuzzConditions(f *testing.F) {
	release := rt.Build{Repository: "https://github.com/acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3", Event: "push"}
	f.Add(rt.GitHubProvenance(release), []byte(`[{"name":"ghcr.io/acme/app","digest":{"sha256":"ab"}}]`))
	f.Add(rt.SLSAGeneratorProvenance(release), []byte(`[]`))
	f.Add([]byte(`{"packages":[{"name":"lib1","licenseConcluded":"MIT"},{"name":"x"}]}`), []byte(`null`))
	f.Add([]byte(`[]`), []byte(`{}`))
	f.Add([]byte(`{"buildDefinition":{"buildType":7}}`), []byte(`[1]`))
	rule, err := Compile(&v1alpha1.AttestationRule{Name: "f", PredicateType: "https://example.com/any/v1", Conditions: []v1alpha1.AttestationCondition{
		{Expression: "!has(predicate.packages) || predicate.packages.all(p, !has(p.licenseConcluded) || !(p.licenseConcluded in ['GPL-3.0-only']))"},
		{Expression: "!has(predicate.buildDefinition) || predicate.buildDefinition.buildType.startsWith('https://')"},
		{Expression: "subject.all(s, !has(s.name) || size(s.name) < 256)"},
	}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	strict, err := Compile(&v1alpha1.AttestationRule{Name: "strict", PredicateType: "https://example.com/any/v1", Conditions: []v1alpha1.AttestationCondition{
		{Expression: "predicate.buildDefinition.buildType == 'https://actions.github.io/buildtypes/workflow/v1'"},
	}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, predicate, subject []byte) {
		st := &RawStatement{PredicateType: "https://example.com/any/v1", Subject: subject, Predicate: predicate}
		start := time.Now()
		_, why := rule.Admits(context.Background(), st)
		_, strictWhy := strict.Admits(context.Background(), st)
		if took := time.Since(start); took > 2*evalTimeout+5*time.Second {
			t.Fatalf("took %v, past the time bound", took)
		}
		if strictWhy == "" {
			var p struct {
				BuildDefinition struct {
					BuildType *string `json:"buildType"`
				} `json:"buildDefinition"`
			}
			if json.Unmarshal(predicate, &p) != nil || p.BuildDefinition.BuildType == nil || *p.BuildDefinition.BuildType != "https://actions.github.io/buildtypes/workflow/v1" {
				t.Fatalf("admitted a statement whose predicate does not hold the build type the condition requires: %q", predicate)
			}
		}
		_ = why // either answer is valid; it must only come, without panicking
	})
}
