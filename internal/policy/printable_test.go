package policy

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"plain text, \"quoted\"": "plain text, \"quoted\"",
		"évité ✓":                "évité ✓",
		"a\nb":                   `a\nb`,
		"a\r\n\tb":               `a\r\n\tb`,
		"x\u202egnp.exe":         `x\u202egnp.exe`,
		"nul\x00":                `nul\x00`,
		"bad\xffutf8":            `bad\xffutf8`,
		"del\x7f":                `del\x7f`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
