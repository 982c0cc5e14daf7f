package attest

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// FuzzReadScan feeds arbitrary predicates to both readers. Whatever the bytes: no panic; an
// error is always an UnreadableError (which refuses); a scan that reads has a finish time and
// distinct, named findings no more numerous than the input could hold; and with maxSeverity
// None a scan that found anything rated above None never passes, and refuses with exactly
// those findings, so that no input reads as "clean" while carrying one.
func FuzzReadScan(f *testing.F) {
	for _, file := range []string{"trivy-cosign-vuln.json", "intoto-vulns-v02.json"} {
		b, err := os.ReadFile("testdata/" + file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
		f.Add(b, false)
	}
	f.Add([]byte(`{"scanner":{"uri":"pkg:github/aquasecurity/trivy@1","result":{"SchemaVersion":2,"Results":null}},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`), true)
	f.Add([]byte(`{"scanner":{"uri":"x","result":[]},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`), false)
	f.Add([]byte(`{"scanner":{"uri":"x","result":[{"id":"a","severity":[{"score":"9.9"}]},{"id":"a","severity":[{"score":"low"}]}]},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}`), false)
	strict, err := Compile(&v1alpha1.AttestationRule{Name: "f", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityNone}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, predicate []byte, cosign bool) {
		pt := v1alpha1.PredicateInTotoVulns
		if cosign {
			pt = v1alpha1.PredicateCosignVuln
		}
		s, err := ReadScan(pt, predicate)
		if err != nil {
			var ue *UnreadableError
			if !errors.As(err, &ue) || s != nil {
				t.Fatalf("ReadScan = %v, %v: an error must be an UnreadableError and nothing else", s, err)
			}
			return
		}
		if s.Finished.IsZero() || s.Scanner == "" {
			t.Fatalf("a scan without a finish time or scanner read: %+v", s)
		}
		if len(s.Findings) > len(predicate)/8 {
			t.Fatalf("%d findings from %d bytes", len(s.Findings), len(predicate))
		}
		seen := map[string]bool{}
		for _, f := range s.Findings {
			if f.ID == "" || seen[f.ID] || f.Severity > Critical {
				t.Fatalf("finding %+v (seen before: %v)", f, seen[f.ID])
			}
			seen[f.ID] = true
		}
		rated := 0 // findings above None
		for _, f := range s.Findings {
			if f.Severity > None {
				rated++
			}
		}
		v := strict.Judge(s, s.Finished.Add(time.Minute), nil)
		if (v.Problem == "") != (rated == 0) || len(v.Refusing) != rated {
			t.Fatalf("with maxSeverity None, %d findings above None judged %q (%d refusing)", rated, v.Problem, len(v.Refusing))
		}
	})
}
