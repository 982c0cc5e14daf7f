package version

import (
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	if got := Of("v1.2.3"); got != "v1.2.3" {
		t.Errorf("Of(v1.2.3) = %q", got)
	}
	// Unstamped (go test): what Go recorded, never empty.
	if got := Of(""); got == "" || strings.Contains(got, "\n") {
		t.Errorf("Of(\"\") = %q", got)
	}
}
