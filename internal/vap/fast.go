package vap

import (
	"regexp"
	"slices"
	"strings"

	"github.com/imagegate/imagegate/internal/imageref"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// The fast path. Normalizing every image (variables.refs) is most of what a generated policy
// costs the apiserver, and a Pod that breaks no rule does not need it: its messages are never
// written. So each validation first tries a proof that the policy finds nothing wrong with
// any image of the Pod: per image, one regular expression for what the policy allows (OK)
// and one for what it may refuse (BAD), matched against the reference as written, in the
// Pod's fields directly. Only when the proof fails are the images normalized and the messages
// built (variables.pN), so a refusal and its wording are as before.
//
// The proof may fail for a Pod the policy allows (then the full path decides); it must never
// hold for a Pod the full path refuses. For each image i it holds when i matches OK and not
// BAD, and then:
//   - i is no image ID by kindOf's rule: BAD holds every image-ID prefix that OK could match;
//   - if i is not plain (kindOf 'x'), the full path has no message for it either (the
//     webhook decides it), whatever the proof says;
//   - if i is plain, OK holds only names whose canonical host, path, tag and digest one of
//     images.allow's patterns matches (every plain name, with no allow list), with the tag or
//     digest that requireDigest, tags.requireTag and a denied "latest" ask for; and BAD holds
//     every plain reference that an images.deny pattern matches, or whose tag is in tags.deny.
//
// The expressions rely on plain references' grammar: a path component holds no '/', ':' or
// '@'; a host holds a ':' only before its port; the first component is a host by the
// runtime's rule (hostRule); the tag follows the last '/', and the digest comes last.

const (
	// segChars is a path component of a plain reference, or part of one.
	segChars = `[^/:@]`
	// anySegments is one or more path components, each after a '/'.
	anySegments = `(?:/` + segChars + `+)+`
	// dockerHubHostsRE is Docker Hub's names, with or without the default HTTPS port.
	dockerHubHostsRE = `(?:(?:index\.|registry-1\.)?docker\.io|registry\.hub\.docker\.com)(?::443)?`
	// anyTD is any tag and digest after a plain name.
	anyTD = `(?::[^/@]*)?(?:@.*)?`
	// dockerHubHost is Docker Hub's canonical host (imageref.CanonicalHost).
	dockerHubHost = "docker.io"
	// idPrefixRE holds every string kindOf's image-ID test (imageIDRE) holds, and a few more.
	idPrefixRE = `^(?:sha|blake)[0-9]+:`
	// hostlessLocalhostRE: "localhost/..." is a host by the runtime's rule, though its first
	// component has no dot.
	hostlessLocalhostRE = `^localhost/`
)

// plainHost is a canonical host that a plain reference can name (lowercase DNS, port without
// leading zeros): others (IPv6, uppercase) are only in references the webhook decides.
var plainHost = regexp.MustCompile(`^` + hostRE + `$`)

var (
	// tagName is a tag's grammar; sha256Digest, the only digest a plain reference holds.
	tagName      = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	sha256Digest = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	idPrefix     = regexp.MustCompile(idPrefixRE)
)

// fastPath is the CEL proof that the policy finds nothing wrong with any image of the Pod,
// or "" when the policy's rules have no such proof (then every Pod takes the full path).
func fastPath(r *policy.NameRules) string {
	ok, bad := fastRegexes(r)
	if ok == "" {
		return ""
	}
	check := func(i string) string {
		c := i + ".matches(" + quote(ok) + ")"
		if bad != "" {
			c = "!" + i + ".matches(" + quote(bad) + ") && " + c
		}
		return c
	}
	// Every image written and passing: no image that is missing or fails.
	return "!" + podspec.AnyImageCEL(func(i string) string { return "!(" + check(i) + ")" })
}

// fastRegexes are the policy's OK and BAD expressions (BAD "" when nothing is needed), or ""
// for OK when no image can take the fast path.
func fastRegexes(r *policy.NameRules) (ok, bad string) {
	var badAlts []string
	needID, needLocalhost := false, false
	// What a pattern with neither tag nor digest asks of an image after its name. A plain
	// name is followed by ':' only for its tag, which holds no '/', and by '@' only for its
	// digest, which comes last.
	td := anyTD
	switch {
	case r.RequireDigest:
		td = `(?::[^/@]*)?@.*`
	case r.RequireTag || slices.Contains(r.TagDeny, "latest"):
		td = `(?::[^/@]*(?:@.*)?|@.*)`
	}
	// The names allowed, grouped by what must follow them (patterns without tag or digest
	// share one group), in the order first written.
	var tds []string
	byTD := map[string][]string{}
	if len(r.Allow) == 0 {
		// Every plain name: a first component with a port before a '/', or a single one.
		tds = append(tds, td)
		byTD[td] = []string{segChars + `+(?::[0-9]+)?` + anySegments, segChars + `+`}
		needID = true
	}
	for i := range r.Allow {
		p := &r.Allow[i]
		ptd, matchable := patternTD(p, r, td)
		if !matchable {
			continue
		}
		names := patternNames(p)
		if len(names.alts) == 0 {
			continue
		}
		needID = needID || names.id
		needLocalhost = needLocalhost || names.localhost
		if _, seen := byTD[ptd]; !seen {
			tds = append(tds, ptd)
		}
		byTD[ptd] = append(byTD[ptd], names.alts...)
	}
	if len(tds) == 0 {
		return "", ""
	}
	okAlts := make([]string, len(tds))
	for i, t := range tds {
		okAlts[i] = `(?:` + strings.Join(byTD[t], "|") + `)` + t
	}
	for i := range r.Deny {
		names := patternNames(&r.Deny[i])
		if !names.exact {
			// A superset of what the pattern matches: all of Docker Hub.
			names = patternNames(&imageref.Pattern{Host: dockerHubHost, Path: "**", Segments: []string{"**"}})
		}
		if len(names.alts) > 0 {
			badAlts = append(badAlts, `^(?:`+strings.Join(names.alts, "|")+`)`+denyTD(&r.Deny[i])+`$`)
		}
	}
	var quoted []string
	for _, t := range r.TagDeny {
		// A tag outside the grammar is in no plain reference (nor is it a valid expression).
		if tagName.MatchString(t) {
			quoted = append(quoted, regexp.QuoteMeta(t))
		}
	}
	if len(quoted) > 0 {
		// A tag is the reference's end unless a digest follows, and with a digest tags.deny
		// does not apply.
		badAlts = append(badAlts, `:(?:`+strings.Join(quoted, "|")+`)$`)
	}
	if needID {
		badAlts = append(badAlts, idPrefixRE)
	}
	if needLocalhost {
		badAlts = append(badAlts, hostlessLocalhostRE)
	}
	return `^(?:` + strings.Join(okAlts, "|") + `)$`, strings.Join(badAlts, "|")
}

// patternTD is what an image must carry after its name for the allow pattern p to match it
// and the policy's tag and digest rules to pass (td for a pattern without tag or digest);
// false when no image can have both.
func patternTD(p *imageref.Pattern, r *policy.NameRules, td string) (string, bool) {
	switch {
	case p.Digest != "":
		if !sha256Digest.MatchString(p.Digest) {
			return "", false // a plain reference's digest is sha256
		}
		return `(?::[^/@]*)?@` + regexp.QuoteMeta(p.Digest), true
	case p.Tag != "":
		// The pattern's tag matches only without a digest, so requireDigest fails.
		if r.RequireDigest {
			return "", false
		}
		if p.Tag != "latest" {
			return `:` + regexp.QuoteMeta(p.Tag), true
		}
		switch {
		case slices.Contains(r.TagDeny, "latest"):
			return "", false
		case r.RequireTag:
			return `:latest`, true
		}
		return `(?::latest)?`, true
	}
	return td, true
}

// denyTD is what follows the name of a plain reference that the deny pattern p matches.
func denyTD(p *imageref.Pattern) string {
	switch {
	case p.Digest != "":
		return `(?::[^/@]*)?@` + regexp.QuoteMeta(p.Digest)
	case p.Tag == "latest":
		return `(?::latest)?`
	case p.Tag != "":
		return `:` + regexp.QuoteMeta(p.Tag)
	}
	return anyTD
}

// names are the spellings, as regular expressions over a plain reference's name, of what a
// pattern's host and path match.
type names struct {
	alts []string
	// exact: alts are exactly the plain names the pattern matches; otherwise a part of them.
	exact bool
	// id and localhost: an alternative could also match a reference that starts like an
	// image ID, or a "localhost/" one, which BAD must then exclude.
	id, localhost bool
}

// patternNames spells the pattern's canonical host and path as a plain reference can write
// them.
func patternNames(p *imageref.Pattern) names {
	if p.Host != dockerHubHost {
		if !plainHost.MatchString(p.Host) {
			return names{exact: true} // no plain reference names this host
		}
		// The host as written, and with the default port unless it has one; a host without a
		// dot, a port or the name localhost is one only with the port.
		host := regexp.QuoteMeta(p.Host)
		switch {
		case strings.Contains(p.Host, ":"):
		case strings.Contains(p.Host, ".") || p.Host == "localhost":
			host += `(?::443)?`
		default:
			host += `:443`
		}
		alt := host + pathRegex(p.Segments)
		return names{alts: []string{alt}, exact: true, id: idPrefix.MatchString(p.Host + "/")}
	}
	segs := p.Segments
	if len(segs) == 1 && segs[0] == "**" {
		return names{alts: []string{
			dockerHubHostsRE + anySegments,
			// Without a host: a first component the runtime does not take for one.
			`[^/:@.]+` + anySegments,
			segChars + `+`,
		}, exact: true, id: true, localhost: true}
	}
	first := segs[0]
	if len(segs) < 2 || strings.Contains(first, "*") {
		return names{}
	}
	// A name of two or more components is its own path: the first is the pattern's.
	multi := regexp.QuoteMeta(first) + pathRegex(segs[1:])
	n := names{alts: []string{dockerHubHostsRE + `/` + multi}, exact: true}
	if !strings.Contains(first, ".") && first != "localhost" {
		n.alts = append(n.alts, multi)
	}
	// A name of one component s is library/s.
	if first == "library" {
		if one, ok := oneSegment(segs[1:]); ok {
			n.alts = append(n.alts, dockerHubHostsRE+`/`+one, one)
			n.id = true
		}
	}
	return n
}

// pathRegex matches "/" + a plain path that the pattern's segments match: at least one
// component.
func pathRegex(segs []string) string {
	if !slices.ContainsFunc(segs, func(s string) bool { return s != "**" }) {
		return anySegments
	}
	return segmentsBody(segs, segChars)
}

// oneSegment matches the component s when segs match the path s alone (with "**" matching
// nothing), false when no single component can be matched.
func oneSegment(segs []string) (string, bool) {
	var literal []string
	for _, s := range segs {
		if s != "**" {
			literal = append(literal, s)
		}
	}
	switch len(literal) {
	case 0:
		return segChars + `+`, true
	case 1:
		return segmentRegex(literal[0], segChars), true
	}
	return "", false
}
