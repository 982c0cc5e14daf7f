package policy

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable returns s with every character that is not printable (control characters such as
// a newline, format characters such as a right-to-left override, invalid UTF-8) written as a
// Go escape (\n, \u202e, \xff). Text a requester controls (an image string, a parser's reason
// that quotes it, an object name in a CLI input) goes through it before it reaches a message,
// an Event or a report line, so that it can never forge a line or hide what it says.
func Printable(s string) string {
	if isPrintable(s) {
		return s // the common case: no allocation
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i]), 16))
		case r == ' ' || unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r) // '\n' or '\u202e', with its quotes
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' {
			// Past printable ASCII: decide rune by rune.
			for _, r := range s[i:] {
				if r == utf8.RuneError || (r != ' ' && !unicode.IsPrint(r)) {
					return false
				}
			}
			return true
		}
	}
	return true
}
