package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDocsHelmValuesRender renders the chart with every Helm values example of the docs (a
// YAML block whose keys are all the chart's values), so that what a user copies installs.
func TestDocsHelmValuesRender(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var defaults map[string]any
	if err := yaml.Unmarshal(raw, &defaults); err != nil {
		t.Fatal(err)
	}
	pages, _ := filepath.Glob("../../../docs/*.md")
	pages = append(pages, "../../../README.md")
	fence := regexp.MustCompile("(?s)\n( *)```yaml\n(.*?)\n *```")
	rendered := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fence.FindAllStringSubmatch(string(b), -1) {
			var lines []string
			for _, l := range strings.Split(m[2], "\n") {
				lines = append(lines, strings.TrimPrefix(l, m[1]))
			}
			var vals map[string]any
			if yaml.Unmarshal([]byte(strings.Join(lines, "\n")), &vals) != nil || len(vals) == 0 {
				continue
			}
			values := true
			for k := range vals {
				if _, ok := defaults[k]; !ok {
					values = false
				}
			}
			if !values {
				continue
			}
			if _, ok := vals["image"]; !ok {
				vals["image"] = map[string]any{"repository": "ghcr.io/imagegate/imagegate"}
			}
			if _, err := renderValues(t, vals); err != nil {
				t.Errorf("%s: the values example does not render: %v\n%s", filepath.Base(page), err, m[2])
			}
			rendered++
		}
	}
	if rendered < 5 {
		t.Errorf("%d Helm values examples found in the docs; the scan reads too little", rendered)
	}
	t.Logf("%d Helm values examples rendered", rendered)
}
