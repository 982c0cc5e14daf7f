package text

import "testing"

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc..."},
		{"ééé", 2, "éé..."},   // characters, not bytes
		{"ééé", 3, "ééé"},     // six bytes, three characters: not cut
		{"aé", 1, "a..."},     // never half a character
		{"a\xffb", 1, "a..."}, // invalid UTF-8 counts one character per byte
	} {
		if got := Cut(tc.in, tc.n); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
