package check

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/text"
)

// TestFileName is the name `imagegate test` looks for in the folders it is given.
const TestFileName = "imagegate-test.yaml"

// PolicyTest is a test file: policies, the objects to decide, and the decision each must get.
// Paths are relative to the file.
type PolicyTest struct {
	// Policies are files and folders of policies, exceptions and the Secrets and ConfigMaps
	// verify rules name, as for --policy.
	Policies []string `json:"policies"`
	// Resources are files and folders of manifests.
	Resources []string `json:"resources"`
	// Namespace is where objects without one go (-n).
	Namespace string `json:"namespace,omitempty"`
	// Verify checks verify rules in the registries; by default they are skipped (offline),
	// so that a test needs no network.
	Verify bool `json:"verify,omitempty"`
	// Results are the expected decisions.
	Results []ExpectedResult `json:"results"`
}

// ExpectedResult is the decision one object must get.
type ExpectedResult struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Decision is allowed, allowed-with-warnings, allowed-with-audit-violations or denied.
	Decision string `json:"decision"`
	// Messages must each appear in one of the object's violation messages.
	Messages []string `json:"messages,omitempty"`
}

// TestOutcome is what running one test file found.
type TestOutcome struct {
	File string
	// Failures are the expectations not met, one line each; empty when the test passed.
	Failures []string
	// Errors are the inputs the check could not use (exit 2).
	Errors []string
	// Checked counts the expectations.
	Checked int
}

// RunTest runs one test file.
func RunTest(ctx context.Context, file string) TestOutcome {
	out := TestOutcome{File: file}
	data, err := os.ReadFile(file) //nolint:gosec // the user names the test files
	if err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	var t PolicyTest
	if err := yaml.UnmarshalStrict(data, &t); err != nil {
		out.Errors = append(out.Errors, fmt.Sprintf("not a test file: %v", err))
		return out
	}
	if len(t.Policies) == 0 || len(t.Resources) == 0 || len(t.Results) == 0 {
		out.Errors = append(out.Errors, "a test file needs policies, resources and results")
		return out
	}
	dir := filepath.Dir(file)
	rel := func(paths []string) []string {
		out := make([]string, len(paths))
		for i, p := range paths {
			if out[i] = p; !filepath.IsAbs(p) {
				out[i] = filepath.Join(dir, p)
			}
		}
		return out
	}
	report, err := Run(ctx, Options{PolicyPaths: rel(t.Policies), Paths: rel(t.Resources), Namespace: t.Namespace, Offline: !t.Verify})
	if err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	for _, e := range report.Errors {
		out.Errors = append(out.Errors, strings.TrimPrefix(e.Location+": ", ": ")+e.Message)
	}
	if len(out.Errors) > 0 {
		return out // the expectations would only repeat that the inputs could not be used
	}
	for _, want := range t.Results {
		out.Checked++
		ns := want.Namespace
		if ns == "" {
			ns = t.Namespace
		}
		if ns == "" {
			ns = DefaultNamespace
		}
		name := want.Kind + "/" + ns + "/" + want.Name
		var got *ObjectResult
		for i := range report.Objects {
			o := &report.Objects[i]
			if o.Kind == want.Kind && o.Namespace == ns && o.Name == want.Name {
				got = o
				break
			}
		}
		if got == nil {
			out.Failures = append(out.Failures, name+": not among the resources")
			continue
		}
		if got.Decision != want.Decision {
			out.Failures = append(out.Failures, fmt.Sprintf("%s: %s, want %s%s", name, got.Decision, want.Decision, violationList(got)))
		}
		for _, m := range want.Messages {
			if !hasMessage(got, m) {
				out.Failures = append(out.Failures, fmt.Sprintf("%s: no violation says %q%s", name, m, violationList(got)))
			}
		}
	}
	return out
}

func hasMessage(o *ObjectResult, m string) bool {
	for _, v := range o.Violations {
		if strings.Contains(v.Message, m) {
			return true
		}
	}
	return false
}

func violationList(o *ObjectResult) string {
	var b bytes.Buffer
	for _, v := range o.Violations {
		fmt.Fprintf(&b, "\n    %s: %s", label(v.Mode), v.Message)
	}
	return b.String()
}

// WriteTestOutcomes writes one line per test file (and per failure or error) and returns the
// exit code: 2 when an input was bad, else 1 when an expectation failed, else 0.
func WriteTestOutcomes(out io.Writer, outcomes []TestOutcome) (int, error) {
	code := ExitAdmitted
	for _, o := range outcomes {
		status := "PASS"
		switch {
		case len(o.Errors) > 0:
			status, code = "ERROR", ExitBadInput
		case len(o.Failures) > 0:
			status = "FAIL"
			if code == ExitAdmitted {
				code = ExitDenied
			}
		}
		if _, err := fmt.Fprintf(out, "%s %s (%d %s)\n", status, policy.Printable(o.File), o.Checked, text.Plural(o.Checked, "result", "results")); err != nil {
			return code, err
		}
		for _, item := range append(o.Errors, o.Failures...) {
			// An item's first line, then the violations it lists, each made printable.
			for i, l := range strings.Split(item, "\n") {
				indent := "  "
				if i > 0 {
					indent = "      "
				}
				if _, err := fmt.Fprintf(out, "%s%s\n", indent, policy.Printable(strings.TrimSpace(l))); err != nil {
					return code, err
				}
			}
		}
	}
	return code, nil
}
