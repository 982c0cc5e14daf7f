package main

import (
	"encoding/json"
	"os/exec"
	"testing"
)

// The three engines must decide every bench Pod alike, with Gatekeeper's own template, or
// the figures compare different work.
func TestEnginesAgree(t *testing.T) {
	// The gatekeeper module, as pinned by hack/bench/gatekeeper (downloaded if needed).
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/open-policy-agent/gatekeeper/v3")
	cmd.Dir = "../../hack/bench/gatekeeper"
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download in hack/bench/gatekeeper: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download said %s (%v)", out, err)
	}
	_, allowedRepos, err := allowedReposTemplate(mod.Dir)
	if err != nil {
		t.Fatal(err)
	}
	cases, err := podCases()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 10} {
		if _, err := enginesAgreeing(n, allowedRepos, cases); err != nil {
			t.Error(err)
		}
	}
}

// The harness waits for the manager's policies by counting a denial's violations; a capped
// message gives its count.
func TestViolationCount(t *testing.T) {
	for msg, want := range map[string]int{
		"a":       1,
		"a\nb\nc": 3,
		"a\nb\n... and 1979 more violations (1999 in all, of 1000 policies; the audit annotation \"policies\" names every policy)": 1999,
	} {
		if got := violationCount(msg); got != want {
			t.Errorf("violationCount(%q) = %d, want %d", msg, got, want)
		}
	}
}
