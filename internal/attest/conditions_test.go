package attest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

func conditionRule(t *testing.T, predicateType string, conds ...v1alpha1.AttestationCondition) (*Rule, error) {
	t.Helper()
	return Compile(&v1alpha1.AttestationRule{Name: "build", PredicateType: predicateType, Conditions: conds}, nil)
}

// TestConditionsCompile: what the API refuses at apply, with Kubernetes' CEL environment and
// its cost estimate.
func TestConditionsCompile(t *testing.T) {
	for _, c := range []struct {
		expression, want string
	}{
		{"predicate.buildDefinition.buildType ==", "compilation failed: ERROR: <input>:1:39: Syntax error"},
		{"predicate.x == nope", "undeclared reference to 'nope'"},
		{"'a' + 'b'", "the expression must evaluate to a bool, not string"},
		// A comprehension inside another, or a search of a list inside one: quadratic.
		{"predicate.materials.all(m, predicate.materials.all(n, m.uri != n.uri || m == n))", "its estimated cost exceeds the limit by a factor of"},
		{"subject.all(s, 'sha256' in s.digest)", "its estimated cost exceeds the limit by a factor of"},
	} {
		_, err := conditionRule(t, "https://example.com/custom/v1", v1alpha1.AttestationCondition{Expression: c.expression})
		var ce *ConditionError
		if !errors.As(err, &ce) || ce.Index != 0 || ce.Rule != "build" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want a ConditionError saying %q", c.expression, err, c.want)
		}
	}
	// What users write compiles: Kubernetes' libraries (lists, strings, regex, URLs) and one
	// pass over a list.
	for _, ok := range []string{
		"predicate.buildDefinition.externalParameters.workflow.path == '.github/workflows/release.yml'",
		"predicate.buildDefinition.resolvedDependencies.exists(d, d.uri.startsWith('git+https://github.com/acme/'))",
		"subject.all(s, has(s.digest.sha256)) && predicateType.endsWith('/v1')",
		"predicate.packages.all(p, !has(p.licenseConcluded) || !(p.licenseConcluded in ['GPL-3.0-only', 'AGPL-3.0-only']))",
		"url(predicate.runDetails.builder.id).getHostname() == 'github.com'",
		"predicate.buildDefinition.buildType.matches('^https://actions\\\\.github\\\\.io/')",
	} {
		if _, err := conditionRule(t, rt.SLSAProvenanceV1, v1alpha1.AttestationCondition{Expression: ok}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// TestConditions evaluates conditions on statements: true, false (with and without a
// message), an evaluation error, and the runtime cost limit.
func TestConditions(t *testing.T) {
	release := rt.Build{Repository: "https://github.com/acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3", Event: "push"}
	predicate := rt.GitHubProvenance(release)
	subject := []byte(`[{"name":"ghcr.io/acme/app","digest":{"sha256":"` + strings.Repeat("ab", 32) + `"}}]`)
	st := &RawStatement{PredicateType: rt.SLSAProvenanceV1, Subject: subject, Predicate: predicate}
	for _, c := range []struct {
		name  string
		conds []v1alpha1.AttestationCondition
		want  string
	}{
		{"true", []v1alpha1.AttestationCondition{
			{Expression: "predicate.buildDefinition.externalParameters.workflow.path == '.github/workflows/release.yml'"},
			{Expression: "predicate.buildDefinition.internalParameters.github.runner_environment == 'github-hosted'"},
			{Expression: "subject[0].name == 'ghcr.io/acme/app' && predicateType == 'https://slsa.dev/provenance/v1'"},
		}, ""},
		{"false, with its message", []v1alpha1.AttestationCondition{
			{Expression: "true"},
			{Expression: "predicate.buildDefinition.internalParameters.github.runner_environment == 'self-hosted'", Message: "must be built on our own runners"},
		}, `attestation "build": must be built on our own runners`},
		{"false, without", []v1alpha1.AttestationCondition{{Expression: "predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'"}},
			`attestation "build": conditions[0] is false: predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'`},
		{"error", []v1alpha1.AttestationCondition{{Expression: "predicate.buildDefinition.nothing == 1"}},
			`attestation "build": conditions[0] (predicate.buildDefinition.nothing == 1) could not be evaluated: no such key: nothing`},
		{"dyn not bool", []v1alpha1.AttestationCondition{{Expression: "predicate.buildDefinition.buildType"}},
			`conditions[0] (predicate.buildDefinition.buildType) is not a bool but string`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := conditionRule(t, rt.SLSAProvenanceV1, c.conds...)
			if err != nil {
				t.Fatal(err)
			}
			_, got := r.Admits(context.Background(), st)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}

	// The runtime limits, on statements larger than the estimate assumes: the cost (a 9 MiB
	// string searched 12 times) and the time (a list of 200,000 elements).
	var terms []string
	for range 12 {
		terms = append(terms, "!predicate.s.contains('needle')")
	}
	r, err := conditionRule(t, "https://example.com/big/v1", v1alpha1.AttestationCondition{Expression: strings.Join(terms, " && ")})
	if err != nil {
		t.Fatal(err)
	}
	evalTimeout = time.Minute // the cost limit alone, however slow the machine (-race)
	_, got := r.Admits(context.Background(), &RawStatement{PredicateType: "https://example.com/big/v1", Predicate: []byte(`{"s":"` + strings.Repeat("a", 9<<20) + `"}`)})
	evalTimeout = defaultEvalTimeout
	if !strings.Contains(got, "could not be evaluated: operation cancelled: actual cost limit exceeded") {
		t.Fatalf("got %q", got)
	}
	r, err = conditionRule(t, "https://example.com/sbom/v1", v1alpha1.AttestationCondition{Expression: "predicate.packages.all(p, p.name.startsWith('lib'))"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`{"packages":[`)
	for i := range 200_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"lib%d"}`, i)
	}
	b.WriteString(`]}`)
	start := time.Now()
	_, got = r.Admits(context.Background(), &RawStatement{PredicateType: "https://example.com/sbom/v1", Predicate: []byte(b.String())})
	if !strings.Contains(got, "could not be evaluated: the conditions took longer than 1s") {
		t.Fatalf("got %q", got)
	}
	if took := time.Since(start); took > 10*time.Second { // the bound, not a benchmark: it must stop
		t.Fatalf("took %v", took)
	}
}
