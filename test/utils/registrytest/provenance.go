package registrytest

import (
	"encoding/json"
	"strings"
)

// Predicate types of SLSA provenance.
const (
	SLSAProvenanceV1  = "https://slsa.dev/provenance/v1"
	SLSAProvenanceV02 = "https://slsa.dev/provenance/v0.2"
)

// Build is what a provenance fixture says about a GitHub Actions build.
type Build struct {
	// Repository is https://github.com/<owner>/<repo>; Workflow the workflow's path in it;
	// Ref the ref it ran at (refs/tags/v1.2.3).
	Repository, Workflow, Ref string
	// Event is the event that started it (push, workflow_dispatch); Inputs its inputs.
	Event  string
	Inputs map[string]any
}

func (b Build) commit() string { return strings.Repeat("a1b2c3d4", 5) }

// GitHubProvenance is SLSA provenance v1 as GitHub's actions/attest-build-provenance writes
// it (build type https://actions.github.io/buildtypes/workflow/v1; the builder is the
// workflow itself at its ref). It records no inputs.
func GitHubProvenance(b Build) []byte {
	return mustJSON(map[string]any{
		"buildDefinition": map[string]any{
			"buildType": "https://actions.github.io/buildtypes/workflow/v1",
			"externalParameters": map[string]any{
				"workflow": map[string]any{"ref": b.Ref, "repository": b.Repository, "path": b.Workflow},
			},
			"internalParameters": map[string]any{
				"github": map[string]any{"event_name": b.Event, "repository_id": "801234567", "repository_owner_id": "9876543", "runner_environment": "github-hosted"},
			},
			"resolvedDependencies": []any{map[string]any{
				"uri": "git+" + b.Repository + "@" + b.Ref, "digest": map[string]string{"gitCommit": b.commit()},
			}},
		},
		"runDetails": map[string]any{
			"builder":  map[string]any{"id": b.Repository + "/" + b.Workflow + "@" + b.Ref},
			"metadata": map[string]any{"invocationId": b.Repository + "/actions/runs/12345678901/attempts/1"},
		},
	})
}

// SLSAGeneratorProvenance is SLSA provenance v1 as the SLSA GitHub generator's delegated
// builders write it (build type .../github-actions-buildtypes/workflow/v1): the builder is the
// generator's reusable workflow, and a workflow_dispatch's inputs are in externalParameters.
func SLSAGeneratorProvenance(b Build) []byte {
	ext := map[string]any{
		"workflow": map[string]any{"ref": b.Ref, "repository": b.Repository, "path": b.Workflow},
		"vars":     map[string]any{},
	}
	if b.Inputs != nil {
		ext["inputs"] = b.Inputs
	}
	return mustJSON(map[string]any{
		"buildDefinition": map[string]any{
			"buildType":          "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
			"externalParameters": ext,
			"internalParameters": map[string]any{"GITHUB_EVENT_NAME": b.Event, "GITHUB_REF": b.Ref, "GITHUB_SHA": b.commit()},
			"resolvedDependencies": []any{map[string]any{
				"uri": "git+" + b.Repository + "@" + b.Ref, "digest": map[string]string{"sha1": b.commit()},
			}},
		},
		"runDetails": map[string]any{
			"builder":  map[string]any{"id": "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/builder_container-based_slsa3.yml@refs/tags/v2.1.0"},
			"metadata": map[string]any{"invocationId": b.Repository + "/actions/runs/12345678901/attempts/1"},
		},
	})
}

// GenericProvenanceV02 is SLSA provenance v0.2 as the SLSA GitHub generator's
// generator_generic_slsa3.yml and generator_container_slsa3.yml write it: the source in
// invocation.configSource, a workflow_dispatch's inputs in the event payload.
func GenericProvenanceV02(b Build) []byte {
	payload := map[string]any{"repository": map[string]any{"html_url": b.Repository}}
	if b.Inputs != nil {
		payload["inputs"] = b.Inputs
	}
	return mustJSON(map[string]any{
		"builder":   map[string]any{"id": "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v1.10.0"},
		"buildType": "https://github.com/slsa-framework/slsa-github-generator/container@v1",
		"invocation": map[string]any{
			"configSource": map[string]any{"uri": "git+" + b.Repository + "@" + b.Ref, "digest": map[string]string{"sha1": b.commit()}, "entryPoint": b.Workflow},
			"parameters":   map[string]any{},
			"environment": map[string]any{
				"github_actor": "release-bot", "github_event_name": b.Event, "github_event_payload": payload,
				"github_ref": b.Ref, "github_ref_type": "tag", "github_run_attempt": "1", "github_sha1": b.commit(),
			},
		},
		"metadata": map[string]any{
			"buildInvocationID": "12345678901-1",
			"completeness":      map[string]any{"parameters": true, "environment": false, "materials": false},
			"reproducible":      false,
		},
		"materials": []any{map[string]any{"uri": "git+" + b.Repository + "@" + b.Ref, "digest": map[string]string{"sha1": b.commit()}}},
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
