// Package text shapes the text imagegate writes into messages, statuses and reports.
package text

// Cut keeps the first n characters of s (runes, as a schema's maxLength counts them; never
// part of one) and marks a cut with "...", so that the result has at most n+3 characters.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s // fewer bytes than n: fewer characters too
	}
	for i := range s {
		if n == 0 {
			return s[:i] + "..."
		}
		n--
	}
	return s
}

// Plural is one when n is 1, else many.
func Plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
