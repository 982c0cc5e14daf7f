package manifest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readAll(t *testing.T, r *Reader, paths ...string) ([]string, []error) {
	t.Helper()
	var got []string
	errs := r.Read(paths, func(d *Document) {
		name := "<not an object>"
		if d.Object != nil {
			name = d.Object.GetKind() + "/" + d.Object.GetName()
		}
		got = append(got, d.Location()+" "+name)
	})
	return got, errs
}

func TestDocumentsAreNumberedAsAUserCountsThem(t *testing.T) {
	in := `# leading comment
---
apiVersion: v1
kind: Pod
metadata: {name: a}
---
---
# only a comment
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: b}}
- {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}
---
just a string
---
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d"}}
`
	got, errs := readAll(t, &Reader{Stdin: strings.NewReader(in)}, Stdin)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := []string{
		"<stdin>#1 Pod/a",
		"<stdin>#2 items[0] Pod/b",
		"<stdin>#2 items[1] Deployment/c",
		"<stdin>#3 <not an object>",
		"<stdin>#4 Pod/d",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFoldersAreWalkedInOrderForManifestFilesOnly(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"b.yaml":           "kind: Pod\nmetadata: {name: b}\n",
		"a.yml":            "kind: Pod\nmetadata: {name: a}\n",
		"sub/c.JSON":       `{"kind": "Pod", "metadata": {"name": "c"}}`,
		"notes.txt":        "kind: Pod\n",
		"sub/deeper/d.yml": "kind: Pod\nmetadata: {name: d}\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, errs := readAll(t, &Reader{}, dir)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var names []string
	for _, g := range got {
		names = append(names, g[strings.LastIndex(g, "/")+1:])
	}
	if strings.Join(names, ",") != "a,b,c,d" {
		t.Errorf("got %v", got)
	}
}

func TestABadDocumentDoesNotHideTheOthers(t *testing.T) {
	in := "kind: Pod\nmetadata: {name: a}\n---\nkind: [\n---\nkind: Pod\nmetadata: {name: c}\n"
	got, errs := readAll(t, &Reader{Stdin: strings.NewReader(in)}, Stdin)
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "<stdin>#2: ") {
		t.Errorf("errors %v, want one for <stdin>#2", errs)
	}
	if len(got) != 2 || !strings.HasSuffix(got[1], "#3 Pod/c") {
		t.Errorf("documents %v", got)
	}
}

// Each document knows the line it starts at (its first line that holds something), for
// reports that point into the file (SARIF, annotations).
func TestDocumentLines(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []int
	}{
		{"YAML", "# comment\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n\n# note\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n", []int{3, 9}},
		{"a List", "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n", []int{1}},
		{"concatenated JSON", "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n\n  {\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n", []int{1, 3}},
	} {
		var got []int
		errs := (&Reader{Stdin: strings.NewReader(tc.in)}).Read([]string{Stdin}, func(d *Document) { got = append(got, d.Line) })
		if len(errs) > 0 {
			t.Fatal(tc.name, errs)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: lines %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A YAML error names the line of the file, not of the document, and the document's line.
func TestErrorLinesAreTheFiles(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n# broken\napiVersion: v1\nkind: Pod\nmetadata: {name: b\n"
	errs := (&Reader{Stdin: strings.NewReader(in)}).Read([]string{Stdin}, func(*Document) {})
	if len(errs) != 1 {
		t.Fatalf("errors: %v", errs)
	}
	var me *Error
	if !errors.As(errs[0], &me) || me.Line != 6 || !strings.Contains(me.Error(), "yaml: line 8:") {
		t.Errorf("got %v (line %d), want the error at the file's line 8, the document at line 6", errs[0], me.Line)
	}
}
