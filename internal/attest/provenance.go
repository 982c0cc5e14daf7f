package attest

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	provv02 "github.com/in-toto/attestation/go/predicates/provenance/v02"
	provv1 "github.com/in-toto/attestation/go/predicates/provenance/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// Provenance is what imagegate reads of SLSA provenance: who built the image, from what, how.
type Provenance struct {
	// BuilderID is runDetails.builder.id (v0.2: builder.id).
	BuilderID string `json:"builderID"`
	// BuildType is the build type URI.
	BuildType string `json:"buildType"`
	// SourceRepository and SourceRef are where the build's source came from: the workflow's
	// repository and ref (externalParameters.workflow in GitHub's build types), else the first
	// git dependency (v0.2: invocation.configSource, else the first git material).
	SourceRepository string `json:"sourceRepository,omitempty"`
	SourceRef        string `json:"sourceRef,omitempty"`
	// Inputs are the names of the inputs given when the build started (a workflow_dispatch's
	// inputs: externalParameters.inputs; v0.2: invocation.parameters or the event payload's).
	Inputs []string `json:"inputs,omitempty"`
}

// IsProvenancePredicate reports whether provenance rules read predicates of this type.
func IsProvenancePredicate(predicateType string) bool {
	return predicateType == v1alpha1.PredicateSLSAProvenanceV1 || predicateType == v1alpha1.PredicateSLSAProvenanceV02
}

var protoJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// ReadProvenance reads SLSA provenance v1 or v0.2 with in-toto's own types.
func ReadProvenance(predicateType string, predicate []byte) (*Provenance, error) {
	switch predicateType {
	case v1alpha1.PredicateSLSAProvenanceV1:
		var p provv1.Provenance
		if err := protoJSON.Unmarshal(predicate, &p); err != nil {
			return nil, fmt.Errorf("its SLSA provenance v1 cannot be read: %w", err)
		}
		out := &Provenance{BuilderID: p.GetRunDetails().GetBuilder().GetId(), BuildType: p.GetBuildDefinition().GetBuildType()}
		ext := p.GetBuildDefinition().GetExternalParameters().GetFields()
		if wf := ext["workflow"].GetStructValue().GetFields(); wf != nil {
			out.SourceRepository = wf["repository"].GetStringValue()
			out.SourceRef = wf["ref"].GetStringValue()
		}
		if out.SourceRepository == "" {
			for _, d := range p.GetBuildDefinition().GetResolvedDependencies() {
				if repo, ref, ok := gitURI(d.GetUri()); ok {
					out.SourceRepository, out.SourceRef = repo, ref
					break
				}
			}
		}
		out.Inputs = inputNames(ext["inputs"])
		return out, nil
	case v1alpha1.PredicateSLSAProvenanceV02:
		var p provv02.Provenance
		if err := protoJSON.Unmarshal(predicate, &p); err != nil {
			return nil, fmt.Errorf("its SLSA provenance v0.2 cannot be read: %w", err)
		}
		out := &Provenance{BuilderID: p.GetBuilder().GetId(), BuildType: p.GetBuildType()}
		if repo, ref, ok := gitURI(p.GetInvocation().GetConfigSource().GetUri()); ok {
			out.SourceRepository, out.SourceRef = repo, ref
		} else {
			for _, m := range p.GetMaterials() {
				if repo, ref, ok := gitURI(m.GetUri()); ok {
					out.SourceRepository, out.SourceRef = repo, ref
					break
				}
			}
		}
		out.Inputs = inputNames(structpb.NewStructValue(p.GetInvocation().GetParameters()))
		payload := p.GetInvocation().GetEnvironment().GetFields()["github_event_payload"].GetStructValue().GetFields()
		out.Inputs = append(out.Inputs, inputNames(payload["inputs"])...)
		slices.Sort(out.Inputs)
		out.Inputs = slices.Compact(out.Inputs)
		return out, nil
	}
	return nil, fmt.Errorf("%q is not SLSA provenance", predicateType)
}

// inputNames lists the names of the inputs a value records, when it is a map.
func inputNames(v *structpb.Value) []string {
	var names []string
	for k, in := range v.GetStructValue().GetFields() {
		if _, null := in.GetKind().(*structpb.Value_NullValue); !null {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// gitURI reads a git source URI of provenance, git+https://github.com/acme/app@refs/tags/v1:
// the repository and the ref, if any.
func gitURI(uri string) (repo, ref string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "git+")
	if !ok {
		return "", "", false
	}
	// The ref follows the last @ after the host: an @ in the authority is a user.
	scheme, afterScheme, _ := strings.Cut(rest, "://")
	host, p, _ := strings.Cut(afterScheme, "/")
	if i := strings.LastIndexByte(p, '@'); i >= 0 {
		p, ref = p[:i], p[i+1:]
	}
	return scheme + "://" + host + "/" + p, ref, true
}

// normalRepository is a repository URI compared: no git+ prefix, no .git or / at its end, the
// scheme and host in lower case.
func normalRepository(uri string) string {
	uri = strings.TrimPrefix(uri, "git+")
	uri = strings.TrimSuffix(strings.TrimSuffix(uri, "/"), ".git")
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri
	}
	host, p, _ := strings.Cut(rest, "/")
	return strings.ToLower(scheme) + "://" + strings.ToLower(host) + "/" + p
}

// provenanceRule is a compiled provenance rule.
type provenanceRule struct {
	builderID, sourceRepository, sourceRef, buildType string
	forbidInputs                                      bool
}

func compileProvenance(name, predicateType string, p *v1alpha1.ProvenanceRules) (*provenanceRule, error) {
	if *p == (v1alpha1.ProvenanceRules{}) {
		return nil, nil
	}
	if !IsProvenancePredicate(predicateType) {
		return nil, fmt.Errorf("attestation %q: provenance applies to %s and %s only, not %q", name, v1alpha1.PredicateSLSAProvenanceV1, v1alpha1.PredicateSLSAProvenanceV02, predicateType)
	}
	for field, pattern := range map[string]string{"builderID": p.BuilderID, "sourceRef": p.SourceRef} {
		if _, err := path.Match(pattern, ""); err != nil {
			return nil, fmt.Errorf("attestation %q: provenance.%s %q is not a valid glob: %w", name, field, pattern, err)
		}
	}
	if p.WorkflowInputs != "" && p.WorkflowInputs != v1alpha1.WorkflowInputsAllowed && p.WorkflowInputs != v1alpha1.WorkflowInputsForbidden {
		return nil, fmt.Errorf("attestation %q: provenance.workflowInputs %q is not Allowed or Forbidden", name, p.WorkflowInputs)
	}
	return &provenanceRule{builderID: p.BuilderID, sourceRepository: p.SourceRepository, sourceRef: p.SourceRef, buildType: p.BuildType,
		forbidInputs: p.WorkflowInputs == v1alpha1.WorkflowInputsForbidden}, nil
}

// judge says why the provenance does not meet the rule ("" when it does), naming the field
// and both values.
func (r *provenanceRule) judge(name string, p *Provenance) string {
	glob := func(pattern, s string) bool {
		ok, _ := path.Match(pattern, s) // checked at compile
		return ok
	}
	mismatch := func(field, got, want string, isGlob bool) string {
		how := "want"
		if isGlob && strings.ContainsAny(want, `*?[\`) {
			how = "want one matching"
		}
		if got == "" {
			return fmt.Sprintf("attestation %q: its provenance states no %s; %s %q", name, field, how, want)
		}
		return fmt.Sprintf("attestation %q: provenance %s is %q; %s %q", name, field, printable(got), how, want)
	}
	switch {
	case r.builderID != "" && !glob(r.builderID, p.BuilderID):
		return mismatch("builderID", p.BuilderID, r.builderID, true)
	case r.buildType != "" && p.BuildType != r.buildType:
		return mismatch("buildType", p.BuildType, r.buildType, false)
	case r.sourceRepository != "" && (p.SourceRepository == "" || normalRepository(p.SourceRepository) != normalRepository(r.sourceRepository)):
		return mismatch("sourceRepository", p.SourceRepository, r.sourceRepository, false)
	case r.sourceRef != "" && !glob(r.sourceRef, p.SourceRef):
		return mismatch("sourceRef", p.SourceRef, r.sourceRef, true)
	case r.forbidInputs && len(p.Inputs) > 0:
		names := make([]string, 0, len(p.Inputs))
		for _, n := range p.Inputs[:min(len(p.Inputs), 10)] {
			names = append(names, printable(n))
		}
		return fmt.Sprintf("attestation %q: the build was started with inputs (%s), and provenance.workflowInputs is Forbidden", name, strings.Join(names, ", "))
	}
	return ""
}

// RawStatement is a verified in-toto statement, its parts as JSON.
type RawStatement struct {
	PredicateType string
	Subject       json.RawMessage
	Predicate     json.RawMessage
}

// Inspects reports whether the rule reads what attestations say (provenance or conditions),
// rather than only that one exists.
func (r *Rule) Inspects() bool { return r.provenance != nil || len(r.conditions) > 0 }

// Admits judges one verified statement against the rule's provenance and conditions: it
// returns the provenance read (for provenance rules) and why the statement does not count
// ("" when it does).
func (r *Rule) Admits(ctx context.Context, st *RawStatement) (*Provenance, string) {
	var prov *Provenance
	if r.provenance != nil {
		p, err := ReadProvenance(st.PredicateType, st.Predicate)
		if err != nil {
			return nil, fmt.Sprintf("attestation %q: %v", r.Name, err)
		}
		if why := r.provenance.judge(r.Name, p); why != "" {
			return p, why
		}
		prov = p
	}
	if len(r.conditions) > 0 {
		s := &Statement{PredicateType: st.PredicateType}
		if err := json.Unmarshal(st.Predicate, &s.Predicate); err != nil {
			return prov, fmt.Sprintf("attestation %q: its predicate is not JSON: %v", r.Name, err)
		}
		if len(st.Subject) > 0 {
			if err := json.Unmarshal(st.Subject, &s.Subject); err != nil {
				return prov, fmt.Sprintf("attestation %q: its subject is not a JSON list: %v", r.Name, err)
			}
		}
		if why := r.evalConditions(ctx, s); why != "" {
			return prov, why
		}
	}
	return prov, ""
}
