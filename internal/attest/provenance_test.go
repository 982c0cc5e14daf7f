package attest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/api/v1alpha1"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// TestReadProvenance reads the three formats users' builders write: GitHub's
// attest-build-provenance (v1), the SLSA GitHub generator's delegated builders (v1, with a
// workflow_dispatch's inputs) and its generic and container generators (v0.2).
func TestReadProvenance(t *testing.T) {
	release := rt.Build{Repository: "https://github.com/acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3", Event: "push"}
	dispatched := release
	dispatched.Event, dispatched.Inputs = "workflow_dispatch", map[string]any{"version": "1.2.3", "skip-tests": true, "unset": nil}
	for _, c := range []struct {
		name, predicateType string
		predicate           []byte
		want                Provenance
	}{
		{"attest-build-provenance", rt.SLSAProvenanceV1, rt.GitHubProvenance(release), Provenance{
			BuilderID: "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.3", BuildType: "https://actions.github.io/buildtypes/workflow/v1",
			SourceRepository: "https://github.com/acme/app", SourceRef: "refs/tags/v1.2.3",
		}},
		{"slsa-github-generator v1, dispatched", rt.SLSAProvenanceV1, rt.SLSAGeneratorProvenance(dispatched), Provenance{
			BuilderID:        "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/builder_container-based_slsa3.yml@refs/tags/v2.1.0",
			BuildType:        "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
			SourceRepository: "https://github.com/acme/app", SourceRef: "refs/tags/v1.2.3", Inputs: []string{"skip-tests", "version"},
		}},
		{"generator v0.2", rt.SLSAProvenanceV02, rt.GenericProvenanceV02(release), Provenance{
			BuilderID:        "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v1.10.0",
			BuildType:        "https://github.com/slsa-framework/slsa-github-generator/container@v1",
			SourceRepository: "https://github.com/acme/app", SourceRef: "refs/tags/v1.2.3",
		}},
		{"generator v0.2, dispatched", rt.SLSAProvenanceV02, rt.GenericProvenanceV02(dispatched), Provenance{
			BuilderID:        "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v1.10.0",
			BuildType:        "https://github.com/slsa-framework/slsa-github-generator/container@v1",
			SourceRepository: "https://github.com/acme/app", SourceRef: "refs/tags/v1.2.3", Inputs: []string{"skip-tests", "version"},
		}},
		// Tekton Chains: no workflow, the source is the first git dependency (no ref).
		{"git dependency", rt.SLSAProvenanceV1, []byte(`{"buildDefinition":{"buildType":"https://tekton.dev/chains/v2/slsa","externalParameters":{"runSpec":{}},
			"resolvedDependencies":[{"uri":"oci://gcr.io/tekton-releases/git-init","digest":{"sha256":"00"}},{"uri":"git+https://gitlab.example.com/acme/app.git","digest":{"sha1":"aa"}}]},
			"runDetails":{"builder":{"id":"https://tekton.dev/chains/v2"}}}`), Provenance{
			BuilderID: "https://tekton.dev/chains/v2", BuildType: "https://tekton.dev/chains/v2/slsa", SourceRepository: "https://gitlab.example.com/acme/app.git",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadProvenance(c.predicateType, c.predicate)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(c.want)
			if string(g) != string(w) {
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
	if _, err := ReadProvenance(rt.SLSAProvenanceV1, []byte(`{"runDetails":{"builder":{"id":7}}}`)); err == nil || !strings.Contains(err.Error(), "SLSA provenance v1 cannot be read") {
		t.Fatalf("err = %v", err)
	}
}

// TestProvenanceRules judges provenance, each refusal naming the field and both values.
func TestProvenanceRules(t *testing.T) {
	release := rt.Build{Repository: "https://github.com/acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3", Event: "push"}
	fork := release
	fork.Repository = "https://github.com/evil/app"
	branch := release
	branch.Ref = "refs/heads/feature"
	dispatched := release
	dispatched.Event, dispatched.Inputs = "workflow_dispatch", map[string]any{"version": "9.9.9"}
	rules := v1alpha1.ProvenanceRules{
		BuilderID:        "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/*",
		SourceRepository: "git+https://GitHub.com/acme/app.git",
		SourceRef:        "refs/tags/v*",
		BuildType:        "https://actions.github.io/buildtypes/workflow/v1",
		WorkflowInputs:   v1alpha1.WorkflowInputsForbidden,
	}
	generator := v1alpha1.ProvenanceRules{SourceRepository: "https://github.com/acme/app", WorkflowInputs: v1alpha1.WorkflowInputsForbidden}
	for _, c := range []struct {
		name          string
		rules         v1alpha1.ProvenanceRules
		predicateType string
		predicate     []byte
		want          string
	}{
		{"release", rules, rt.SLSAProvenanceV1, rt.GitHubProvenance(release), ""},
		{"fork", rules, rt.SLSAProvenanceV1, rt.GitHubProvenance(fork),
			`attestation "provenance": provenance builderID is "https://github.com/evil/app/.github/workflows/release.yml@refs/tags/v1.2.3"; want one matching "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/*"`},
		{"fork, repository only", v1alpha1.ProvenanceRules{SourceRepository: "https://github.com/acme/app"}, rt.SLSAProvenanceV1, rt.GitHubProvenance(fork),
			`attestation "provenance": provenance sourceRepository is "https://github.com/evil/app"; want "https://github.com/acme/app"`},
		{"branch", v1alpha1.ProvenanceRules{SourceRef: "refs/tags/v*"}, rt.SLSAProvenanceV1, rt.GitHubProvenance(branch),
			`provenance sourceRef is "refs/heads/feature"; want one matching "refs/tags/v*"`},
		{"build type", v1alpha1.ProvenanceRules{BuildType: "https://actions.github.io/buildtypes/workflow/v1"}, rt.SLSAProvenanceV02, rt.GenericProvenanceV02(release),
			`provenance buildType is "https://github.com/slsa-framework/slsa-github-generator/container@v1"; want "https://actions.github.io/buildtypes/workflow/v1"`},
		{"generator, pushed", generator, rt.SLSAProvenanceV1, rt.SLSAGeneratorProvenance(release), ""},
		{"generator, dispatched with inputs", generator, rt.SLSAProvenanceV1, rt.SLSAGeneratorProvenance(dispatched),
			`attestation "provenance": the build was started with inputs (version), and provenance.workflowInputs is Forbidden`},
		{"v0.2 dispatched with inputs", generator, rt.SLSAProvenanceV02, rt.GenericProvenanceV02(dispatched), "the build was started with inputs (version)"},
		{"v0.2 inputs allowed", v1alpha1.ProvenanceRules{SourceRepository: "https://github.com/acme/app"}, rt.SLSAProvenanceV02, rt.GenericProvenanceV02(dispatched), ""},
		{"no source", v1alpha1.ProvenanceRules{SourceRepository: "https://github.com/acme/app"}, rt.SLSAProvenanceV1, []byte(`{"buildDefinition":{"buildType":"x"},"runDetails":{"builder":{"id":"y"}}}`),
			`attestation "provenance": its provenance states no sourceRepository; want "https://github.com/acme/app"`},
		{"look-alike repository", v1alpha1.ProvenanceRules{SourceRepository: "https://github.com/acme/app"}, rt.SLSAProvenanceV1,
			rt.GitHubProvenance(rt.Build{Repository: "https://github.com/acme/app-fork", Workflow: "w.yml", Ref: "refs/tags/v1"}), `sourceRepository is "https://github.com/acme/app-fork"`},
		{"not provenance", v1alpha1.ProvenanceRules{SourceRepository: "https://github.com/acme/app"}, rt.SLSAProvenanceV1, []byte(`[1]`), "cannot be read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Compile(&v1alpha1.AttestationRule{Name: "provenance", PredicateType: c.predicateType, Provenance: c.rules}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Inspects() {
				t.Fatal("a provenance rule must inspect")
			}
			_, got := r.Admits(context.Background(), &RawStatement{PredicateType: c.predicateType, Predicate: c.predicate})
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestProvenanceCompile(t *testing.T) {
	for _, c := range []struct {
		rule v1alpha1.AttestationRule
		want string
	}{
		{v1alpha1.AttestationRule{Name: "p", PredicateType: v1alpha1.PredicateCosignVuln, Provenance: v1alpha1.ProvenanceRules{BuildType: "x"}}, `attestation "p": provenance applies to https://slsa.dev/provenance/v1 and https://slsa.dev/provenance/v0.2 only`},
		{v1alpha1.AttestationRule{Name: "p", PredicateType: rt.SLSAProvenanceV1, Provenance: v1alpha1.ProvenanceRules{SourceRef: "refs/tags/[v"}}, `provenance.sourceRef "refs/tags/[v" is not a valid glob`},
		{v1alpha1.AttestationRule{Name: "p", PredicateType: rt.SLSAProvenanceV1, Provenance: v1alpha1.ProvenanceRules{WorkflowInputs: "Sometimes"}}, `provenance.workflowInputs "Sometimes" is not Allowed or Forbidden`},
	} {
		if _, err := Compile(&c.rule, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
}
