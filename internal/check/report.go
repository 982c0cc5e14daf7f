package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/text"
	"github.com/imagegate/imagegate/internal/verify"
)

// Exit codes of imagegate check.
const (
	ExitAdmitted = 0 // every object would be admitted
	ExitDenied   = 1 // at least one object would be denied
	ExitBadInput = 2 // an input could not be read, or a policy is invalid
)

// Report is the outcome of Run. Its JSON form is the stable output of `imagegate check -o
// json` (schema version v1): fields are only ever added.
type Report struct {
	SchemaVersion string         `json:"schemaVersion"`
	Objects       []ObjectResult `json:"objects"`
	Errors        []InputError   `json:"errors"`
	// Notes are what was skipped that might look checked: another project's policy kinds,
	// another group's kinds with pod templates.
	Notes   []InputError `json:"notes,omitempty"`
	Summary Summary      `json:"summary"`

	offline    bool
	failOnWarn bool
	now        func() time.Time
	verifier   *verify.Verifier
	tuf        verify.TUFOptions
}

// ObjectResult is the decision about one Pod or workload.
type ObjectResult struct {
	File string `json:"file"`
	// Document is the document's number in the file, from 1.
	Document int `json:"document"`
	// Item is the index in a List document, when the object was in one.
	Item *int `json:"item,omitempty"`
	// Line is where the object's document starts in the file, from 1 (0: unknown, as for a
	// rendered kustomization).
	Line      int    `json:"line,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Decision is allowed, allowed-with-warnings, allowed-with-audit-violations or denied:
	// the values of the webhook's pods.imagegate.io/decision audit annotation.
	Decision   string      `json:"decision"`
	Violations []Violation `json:"violations,omitempty"`
	// NotVerified lists the images that verify rules cover and that were not verified:
	// skipped with --offline, or not pinned because their registry failed.
	NotVerified []NotVerified `json:"notVerified,omitempty"`
	// Verified lists each check of an image at its digest against a policy's verify rule:
	// the signature, and what each attestation rule found (a scan's scanner and time, the
	// findings that refuse and those ignored).
	Verified []VerifiedImage `json:"verified,omitempty"`
	// Exempted lists the violations that ImagePolicyExceptions in the policy files lifted
	// (those not expired at the time of the check).
	Exempted []Exempted `json:"exempted,omitempty"`
	// Notes are what the webhook would also warn of for images it admits: the findings
	// VEX statements ruled out, with the statements that did.
	Notes []string `json:"notes,omitempty"`
	// Images are every image of the object, admitted or not: an inventory.
	Images []InventoryImage `json:"images"`

	location string
}

// Exempted is a violation an exception lifted.
type Exempted struct {
	// Exception is namespace/name.
	Exception string    `json:"exception"`
	Expires   time.Time `json:"expires,omitzero"`
	Policy    PolicyRef `json:"policy"`
	Rule      string    `json:"rule"`
	Field     string    `json:"field"`
	Image     string    `json:"image,omitempty"`
	Message   string    `json:"message"`
}

// VerifiedImage is one image checked in its registry against one policy's verify rule.
type VerifiedImage struct {
	Field  string    `json:"field"`
	Image  string    `json:"image"`
	Digest string    `json:"digest"`
	Policy PolicyRef `json:"policy"`
	// Verified is true when the signature and every attestation rule passed; Reason says
	// why not otherwise.
	Verified bool   `json:"verified"`
	Reason   string `json:"reason,omitempty"`
	// ScanExpires is the earliest time a passing scan reaches its maxAge.
	ScanExpires  time.Time                  `json:"scanExpires,omitzero"`
	Attestations []verify.AttestationReport `json:"attestations,omitempty"`
}

// Violation is one broken rule, with the message the webhook gives for it.
type Violation struct {
	// Mode is the policy's mode: Enforce (denies), Warn or Audit.
	Mode   string    `json:"mode"`
	Policy PolicyRef `json:"policy"`
	// Rule is the broken rule as the policy spells it (images.allow, tags.deny, ...).
	Rule       string `json:"rule"`
	Field      string `json:"field"`
	Image      string `json:"image,omitempty"`
	Normalized string `json:"normalized,omitempty"`
	Message    string `json:"message"`
}

// NotVerified is an image that verify rules cover and that was not verified, and why.
type NotVerified struct {
	Field  string `json:"field"`
	Image  string `json:"image"`
	Reason string `json:"reason"`
}

// PolicyRef names a policy.
type PolicyRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// InventoryImage is one image an object names.
type InventoryImage struct {
	Field string `json:"field"`
	Image string `json:"image"`
}

// InputError is an input that could not be used: an unreadable file, a document that is not
// valid YAML or JSON, an invalid policy.
type InputError struct {
	File     string `json:"file,omitempty"`
	Document int    `json:"document,omitempty"`
	// Location is file#document as the text output prints it.
	Location string `json:"location,omitempty"`
	// Line is where the document starts in the file, from 1, when known.
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// Summary counts what was read and decided.
type Summary struct {
	// Policies is the number of policies loaded.
	Policies int `json:"policies"`
	// PolicyDocumentsSkipped counts the documents of the policy paths that are not imagegate
	// policies (kustomization.yaml, for example).
	PolicyDocumentsSkipped int `json:"policyDocumentsSkipped"`
	// Checked is the number of Pods and workloads decided; Admitted + Denied = Checked.
	Checked  int `json:"checked"`
	Admitted int `json:"admitted"`
	Denied   int `json:"denied"`
	// Warned counts the admitted objects with Warn-mode violations.
	Warned int `json:"warned"`
	// Skipped counts the documents that are neither Pods nor workloads.
	Skipped int `json:"skipped"`
	// Errors counts the bad inputs: each document (or file, or option) with at least one
	// input error, however many messages it has in the report's errors.
	Errors int `json:"errors"`
}

// countErrors sets Summary.Errors: one per document, file or option that has errors.
func (r *Report) countErrors() {
	type input struct {
		file     string
		document int
		message  string
	}
	seen := make(map[input]bool, len(r.Errors))
	for _, e := range r.Errors {
		in := input{file: e.File, document: e.Document}
		if e.File == "" {
			in.message = e.Message // an error of no file is an input of its own
		}
		seen[in] = true
	}
	r.Summary.Errors = len(seen)
}

// ExitCode is 2 when an input was bad, else 1 when an object would be denied (or, with
// Strict's failOnWarn, admitted with warnings), else 0.
func (r *Report) ExitCode() int {
	switch {
	case len(r.Errors) > 0:
		return ExitBadInput
	case r.Summary.Denied > 0, r.failOnWarn && r.Summary.Warned > 0:
		return ExitDenied
	default:
		return ExitAdmitted
	}
}

// Strict turns what a pipeline may want to fail on into failures: warnings (failOnWarn: exit
// 1), and a run that decided nothing (failIfNothingChecked: bad input, exit 2; a path that
// holds no Pod or workload, a render that went wrong).
func (r *Report) Strict(failOnWarn, failIfNothingChecked bool) {
	r.failOnWarn = failOnWarn
	if failIfNothingChecked && r.Summary.Checked == 0 && len(r.Errors) == 0 {
		r.Errors = append(r.Errors, InputError{Message: "no Pod or workload was checked (--fail-if-nothing-checked)"})
		r.countErrors()
	}
}

// WriteText writes one line per violation and the summary to out, and one line per input
// error to errOut:
//
//	deploy.yaml#2: Deployment/shop/api: denied: spec.template.spec.containers[0].image: image "..." is not allowed by ...
func (r *Report) WriteText(out, errOut io.Writer) error {
	for _, n := range r.Notes {
		if _, err := fmt.Fprintf(errOut, "note: %s: %s\n", policy.Printable(n.Location), printableLines(n.Message)); err != nil {
			return err
		}
	}
	for _, e := range r.Errors {
		loc := e.Location
		if loc != "" {
			loc += ": "
		}
		// File names, object names and parser errors come from the inputs: one line each,
		// printable, so that a hostile manifest cannot forge report lines.
		if _, err := fmt.Fprintf(errOut, "error: %s%s\n", policy.Printable(loc), printableLines(e.Message)); err != nil {
			return err
		}
	}
	for i := range r.Objects {
		o := &r.Objects[i]
		for _, nv := range o.NotVerified {
			where := policy.Printable(o.location + ": " + o.Kind + "/" + o.Namespace + "/" + o.Name)
			if _, err := fmt.Fprintf(out, "%s: not verified: %s: image %q: %s\n", where, nv.Field, policy.Printable(nv.Image), policy.Printable(nv.Reason)); err != nil {
				return err
			}
		}
		for _, e := range o.Exempted {
			where := policy.Printable(o.location + ": " + o.Kind + "/" + o.Namespace + "/" + o.Name)
			if _, err := fmt.Fprintf(out, "%s: exempt: %s\n", where, policy.Printable(e.Message)); err != nil {
				return err
			}
		}
		for _, n := range o.Notes {
			where := policy.Printable(o.location + ": " + o.Kind + "/" + o.Namespace + "/" + o.Name)
			if _, err := fmt.Fprintf(out, "%s: note: %s\n", where, policy.Printable(n)); err != nil {
				return err
			}
		}
		for _, v := range o.Violations {
			where := policy.Printable(o.location + ": " + o.Kind + "/" + o.Namespace + "/" + o.Name)
			if _, err := fmt.Fprintf(out, "%s: %s: %s\n", where, label(v.Mode), policy.Printable(v.Message)); err != nil {
				return err
			}
		}
	}
	return r.writeSummary(out)
}

// printableLines makes each line of a multi-line message (a kustomize or parser error)
// printable and indents the ones after the first, so that it reads as it was written and
// still cannot forge a report line of its own.
func printableLines(msg string) string {
	lines := strings.Split(strings.TrimRight(msg, "\n"), "\n")
	for i, l := range lines {
		lines[i] = policy.Printable(l)
	}
	return strings.Join(lines, "\n    ")
}

// writeSummary writes the summary line.
func (r *Report) writeSummary(out io.Writer) error {
	s := r.Summary
	_, err := fmt.Fprintf(out, "%d %s checked against %d %s: %d denied, %d admitted (%d with warnings); %d %s skipped; %d input %s\n",
		s.Checked, text.Plural(s.Checked, "object", "objects"), s.Policies, text.Plural(s.Policies, "policy", "policies"),
		s.Denied, s.Admitted, s.Warned, s.Skipped, text.Plural(s.Skipped, "document", "documents"),
		s.Errors, text.Plural(s.Errors, "error", "errors"))
	return err
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(out io.Writer) error {
	r.SchemaVersion = "v1"
	if r.Objects == nil {
		r.Objects = []ObjectResult{}
	}
	if r.Errors == nil {
		r.Errors = []InputError{}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func label(mode string) string {
	switch v1alpha1.PolicyMode(mode) {
	case v1alpha1.ModeEnforce:
		return policy.DecisionDenied
	case v1alpha1.ModeWarn:
		return "warning"
	default:
		return "audit"
	}
}

func policyRef(r policy.Ref) PolicyRef {
	return PolicyRef{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}
