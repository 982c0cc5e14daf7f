package controller

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	reportsv1alpha1 "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A namespace with more results than a Report may hold keeps the most severe, within the
// bounds, far below etcd's 1.5 MiB, and its summary still counts them all.
func TestReportBounds(t *testing.T) {
	entries := map[string]*reportEntry{}
	for i := range 5000 {
		result := resultPass
		if i%5 == 0 {
			result = resultFail
		}
		r := reportsv1alpha1.ReportResult{
			Source: ReportSource, Policy: "p", Rule: "images.allow", Result: result,
			Subjects:    []corev1.ObjectReference{{Kind: "Pod", Name: fmt.Sprintf("pod-%d", i)}},
			Description: strings.Repeat("x", reportMaxText), Properties: map[string]string{"image": strings.Repeat("i", reportMaxText)},
		}
		entries[resultKey(&r)] = &reportEntry{key: resultKey(&r), result: r}
	}
	report, _ := buildReport("ns", entries, nil, metav1.Timestamp{Seconds: 1})
	raw, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 600<<10 {
		t.Errorf("the Report is %d bytes, want at most 600 KiB", len(raw))
	}
	if report.Summary.Fail != 1000 || report.Summary.Pass != 4000 {
		t.Errorf("summary %+v, want every result counted", report.Summary)
	}
	for _, r := range report.Results {
		if r.Result != resultFail {
			t.Fatalf("kept a %s while fails were left out", r.Result)
		}
	}
	if got := report.Annotations[ResultsOmittedAnnotation]; got != fmt.Sprint(5000-len(report.Results)) {
		t.Errorf("omitted annotation %q, kept %d", got, len(report.Results))
	}
	t.Logf("5,000 results of 2 KiB: %d kept, %d bytes", len(report.Results), len(raw))
}
