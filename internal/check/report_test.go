package check

import "testing"

// A multi-line message reads with real newlines, each line after the first indented, so that
// no line of it can pass for a report line; control characters within a line stay escaped.
func TestPrintableLines(t *testing.T) {
	got := printableLines("kustomize build failed:\nerror: accumulating resources\x1b[31m\r\n")
	want := "kustomize build failed:\n    error: accumulating resources\\x1b[31m\\r"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
