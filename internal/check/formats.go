package check

import (
	"encoding/xml"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/owenrumney/go-sarif/v3/pkg/report"
	"github.com/owenrumney/go-sarif/v3/pkg/report/v210/sarif"

	"github.com/imagegate/imagegate/internal/manifest"
	"github.com/imagegate/imagegate/internal/policy"
)

// Formats are the values of --output.
var Formats = []string{"text", "json", "sarif", "junit", "github"}

// Write writes the report in format (one of Formats); version names the tool in the formats
// that carry it.
func (r *Report) Write(format, version string, out, errOut io.Writer) error {
	switch format {
	case "json":
		return r.WriteJSON(out)
	case "sarif":
		return r.WriteSARIF(out, version)
	case "junit":
		return r.WriteJUnit(out)
	case "github":
		return r.WriteGitHub(out)
	default:
		return r.WriteText(out, errOut)
	}
}

// artifact is where a result points: the file as a relative URI, the line when known. A
// rendered kustomization points at its kustomization.yaml; standard input at "stdin".
func artifact(file string, line int) (string, int) {
	switch {
	case file == manifest.Stdin:
		return "stdin", 0
	case strings.HasSuffix(file, manifest.RenderedSuffix):
		return filepath.ToSlash(filepath.Join(strings.TrimSuffix(file, manifest.RenderedSuffix), "kustomization.yaml")), 0
	}
	return filepath.ToSlash(file), line
}

// sarifLevel is a violation's SARIF level: Enforce refuses (error), Warn warns (warning),
// Audit only records (note).
func sarifLevel(mode string) string {
	switch mode {
	case "Enforce":
		return "error"
	case "Warn":
		return "warning"
	}
	return "note"
}

// WriteSARIF writes the report as SARIF 2.1.0 (GitHub code scanning, GitLab, Azure DevOps):
// one result per violation, its rule the policy rule that refused (images.allow, tags.deny,
// verify, ...), located at the object's document; one result per input error (rule
// input-error), since a pipeline must not pass on input it could not read.
func (r *Report) WriteSARIF(out io.Writer, version string) error {
	rep := report.NewV210Report()
	run := sarif.NewRunWithInformationURI("imagegate", "https://github.com/imagegate/imagegate")
	run.Tool.Driver.WithVersion(version)
	locate := func(res *sarif.Result, file string, line int) {
		uri, line := artifact(file, line)
		if uri == "" {
			return
		}
		pl := sarif.NewPhysicalLocation().WithArtifactLocation(sarif.NewSimpleArtifactLocation(uri))
		if line > 0 {
			pl.WithRegion(sarif.NewSimpleRegion(line, line))
		}
		res.AddLocation(sarif.NewLocationWithPhysicalLocation(pl))
	}
	for i := range r.Objects {
		o := &r.Objects[i]
		for _, v := range o.Violations {
			run.AddRule(v.Rule).WithShortDescription(sarif.NewMultiformatMessageString().WithText("imagegate policy rule " + v.Rule))
			res := run.CreateResultForRule(v.Rule).WithLevel(sarifLevel(v.Mode)).
				WithMessage(sarif.NewTextMessage(fmt.Sprintf("%s/%s/%s: %s (%s %s)", o.Kind, o.Namespace, o.Name, v.Message, v.Policy.Kind, v.Policy.Name)))
			locate(res, o.File, o.Line)
		}
	}
	for _, e := range r.Errors {
		run.AddRule("input-error").WithShortDescription(sarif.NewMultiformatMessageString().WithText("an input imagegate check could not use"))
		res := run.CreateResultForRule("input-error").WithLevel("error").WithMessage(sarif.NewTextMessage(e.Message))
		if e.File != "" {
			locate(res, e.File, e.Line)
		}
	}
	rep.AddRun(run)
	return rep.PrettyWrite(out)
}

// junit* are the JUnit XML elements GitLab, Jenkins and Azure DevOps read.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Line      int           `xml:"line,attr,omitempty"`
	Failure   *junitProblem `xml:"failure,omitempty"`
	Error     *junitProblem `xml:"error,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitProblem struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML: one test case per object (failed when denied,
// its warnings in system-out) and one errored case per input error.
func (r *Report) WriteJUnit(out io.Writer) error {
	suite := junitSuite{Name: "imagegate check"}
	for i := range r.Objects {
		o := &r.Objects[i]
		uri, line := artifact(o.File, o.Line)
		c := junitCase{Name: o.Kind + "/" + o.Namespace + "/" + o.Name, Classname: uri, File: uri, Line: line}
		var denials, others []string
		for _, v := range o.Violations {
			if v.Mode == "Enforce" {
				denials = append(denials, v.Message)
			} else {
				others = append(others, strings.ToLower(v.Mode)+": "+v.Message)
			}
		}
		if o.Decision == policy.DecisionDenied {
			c.Failure = &junitProblem{Message: "denied", Type: "denied", Text: strings.Join(denials, "\n")}
			suite.Failures++
		}
		c.SystemOut = strings.Join(others, "\n")
		suite.Cases = append(suite.Cases, c)
	}
	for _, e := range r.Errors {
		uri, line := artifact(e.File, e.Line)
		name := e.Location
		if name == "" {
			name = "input"
		}
		suite.Cases = append(suite.Cases, junitCase{Name: name, Classname: uri, File: uri, Line: line,
			Error: &junitProblem{Message: "bad input", Type: "input-error", Text: e.Message}})
		suite.Errors++
	}
	suite.Tests = len(suite.Cases)
	doc := junitSuites{Name: "imagegate check", Tests: suite.Tests, Failures: suite.Failures, Errors: suite.Errors, Suites: []junitSuite{suite}}
	if _, err := io.WriteString(out, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(out)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(out, "\n")
	return err
}

// WriteGitHub writes GitHub Actions workflow commands: an error annotation per denial and
// input error, a warning per Warn violation, a notice per note, each on the file and line it
// concerns, then the summary line.
func (r *Report) WriteGitHub(out io.Writer) error {
	annotate := func(kind, file string, line int, title, msg string) error {
		var props string
		if uri, line := artifact(file, line); uri != "" {
			props = "file=" + escapeProperty(uri) + ","
			if line > 0 {
				props += fmt.Sprintf("line=%d,", line)
			}
		}
		_, err := fmt.Fprintf(out, "::%s %stitle=%s::%s\n", kind, props, escapeProperty(title), escapeData(msg))
		return err
	}
	for _, n := range r.Notes {
		if err := annotate("notice", n.File, n.Line, "imagegate", n.Message); err != nil {
			return err
		}
	}
	for _, e := range r.Errors {
		if err := annotate("error", e.File, e.Line, "imagegate: bad input", e.Message); err != nil {
			return err
		}
	}
	for i := range r.Objects {
		o := &r.Objects[i]
		for _, v := range o.Violations {
			kind := map[string]string{"Enforce": "error", "Warn": "warning"}[v.Mode]
			if kind == "" {
				kind = "notice"
			}
			if err := annotate(kind, o.File, o.Line, fmt.Sprintf("imagegate: %s/%s/%s %s", o.Kind, o.Namespace, o.Name, label(v.Mode)), v.Message); err != nil {
				return err
			}
		}
	}
	return r.writeSummary(out)
}

// escapeData and escapeProperty escape what a workflow command may not hold literally.
func escapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func escapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}
