package vap

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/internal/imageref"
)

// The reference grammar's pieces, for the references these policies decide themselves
// ("plain" ones): a lowercase DNS host with an optional port without leading zeros, lowercase
// path components, a tag, and a sha256 digest. Everything else (IPv6 hosts, uppercase, other
// digest algorithms, odd spellings, over-long names, strings that do not parse) is left to the
// webhook, which the webhook's match condition then calls (WebhookCondition): CEL decides only
// what it normalizes exactly as the engine does.
const (
	labelRE     = `[a-z0-9](?:[a-z0-9-]*[a-z0-9])?`
	portRE      = `[1-9][0-9]{0,4}`
	hostRE      = labelRE + `(?:\.` + labelRE + `)*(?::` + portRE + `)?`
	componentRE = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	tagDigestRE = `(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?`
	// plainRE is a plain reference's grammar with the runtime's rule for its first path
	// component (hostRule) folded in: a host before a '/' when it has a dot or a port or is
	// localhost; otherwise a first component without a dot before a '/', or a single
	// component.
	plainRE = `^(?:` + hostLikeRE + `/` + componentRE + `(?:/` + componentRE + `)*|` +
		compNoDotRE + `(?:/` + componentRE + `)+|` + componentRE + `)` + tagDigestRE + `$`
	// hostLikeRE is hostRE where the runtime's rule takes it for a host; compNoDotRE is
	// componentRE without a dot.
	hostLikeRE  = `(?:` + labelRE + `(?:\.` + labelRE + `)+(?::` + portRE + `)?|` + labelRE + `:` + portRE + `|localhost)`
	compNoDotRE = `[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*`
	// maxPlain bounds a plain reference, so that its name with Docker Hub's prefixes added
	// (docker.io/library/) stays within the grammar's 255 characters.
	maxPlain = 237
	// imageIDRE is imageref.ImageIDLike; quotableRE, a string that Go's %q writes as it is
	// between its quotes (printable ASCII but the quote and the backslash).
	imageIDRE  = `^(?:sha256|sha384|sha512|blake3):[\s\S]`
	quotableRE = `^[ !#-\[\]-~]*$`
	// bareHexRE is what the grammar refuses as a 64-digit image ID without a name.
	bareHexRE = `^[a-f0-9]{64}$`
)

// hostRule is the runtime's rule, in CEL on the name part f (the first path component s):
// a host when there is a slash and it has '.' or ':', or is localhost (an uppercase letter
// also makes one, but no plain reference has one).
func hostRule(name, first string) string {
	return fmt.Sprintf(`(%[1]s.contains('/') && (%[2]s.contains('.') || %[2]s.contains(':') || %[2]s == 'localhost'))`, name, first)
}

// kindOf is the CEL that classifies an image string i: 'id' when the runtime could take it
// as an image ID (refused by every policy, and quotable so that the message is exact), 'p'
// when it is plain, 'x' otherwise (the webhook decides).
func kindOf(i string) string {
	return fmt.Sprintf(`(%[1]s.matches('%[2]s') ? (%[1]s.matches('%[3]s') ? 'id' : 'x') : (%[4]s ? 'p' : 'x'))`,
		i, celRegex(imageIDRE), celRegex(quotableRE), plain(i))
}

// plain is whether the image i, not an image ID, is plain: within maxPlain, not 64 hex
// digits, and in plainRE.
func plain(i string) string {
	return fmt.Sprintf(`(size(%[1]s) <= %[2]d && !%[1]s.matches('%[3]s') && %[1]s.matches('%[4]s'))`, i, maxPlain, bareHexRE, celRegex(plainRE))
}

// celRegex writes a regular expression for a single-quoted CEL string.
func celRegex(re string) string { return strings.ReplaceAll(re, `\`, `\\`) }

// imagesVar lists every image of the Pod as {f: field path, i: image (empty where none is
// written), c: 'y' when the engine checks it whatever the labels (a CREATE, or an image whose
// field did not exist before or held another image)}, in the engine's order: init containers,
// containers, ephemeral containers, image volumes (internal/podspec.PodImages).
var imagesVar = containersOf("initContainers") + " + " + containersOf("containers") + " + " + containersOf("ephemeralContainers") + " + " + volumesOf()

func containersOf(list string) string {
	img := `string(has(c.image) ? c.image : '')`
	old := `(has(oldObject.spec.` + list + `[k].image) ? oldObject.spec.` + list + `[k].image : '')`
	changed := `request.operation != 'UPDATE' || !has(oldObject.spec.` + list + `) || k >= size(oldObject.spec.` + list + `) || ` + old + ` != ` + img
	entry := `{'f': 'spec.` + list + `[' + string(k) + '].image', 'i': ` + img + `, 'c': (` + changed + `) ? 'y' : 'n'}`
	if list == "containers" {
		return `object.spec.containers.transformList(k, c, ` + entry + `)`
	}
	return `(has(object.spec.` + list + `) ? object.spec.` + list + `.transformList(k, c, ` + entry + `) : [])`
}

func volumesOf() string {
	img := `string(has(c.image.reference) ? c.image.reference : '')`
	oldV := `oldObject.spec.volumes[k]`
	changed := `request.operation != 'UPDATE' || !has(oldObject.spec.volumes) || k >= size(oldObject.spec.volumes) || !has(` + oldV + `.image) || ` +
		`(has(` + oldV + `.image.reference) ? ` + oldV + `.image.reference : '') != ` + img
	entry := `{'f': 'spec.volumes[' + string(k) + '].image.reference', 'i': ` + img + `, 'c': (` + changed + `) ? 'y' : 'n'}`
	return `(has(object.spec.volumes) ? object.spec.volumes.transformList(k, c, has(c.image), ` + entry + `) : [])`
}

// refsVar normalizes each of variables.images as the engine does (imageref.Parse,
// CanonicalHost) into {f, i, c, k: kindOf, h: canonical host, p: path, t: tag, d: digest}.
// Only plain references (k == 'p') have h, p, t and d that mean anything, and only for them
// does each step below hold; for any other string every step is still defined (no CEL
// error), since an error would fail the request closed. Two steps: each makes a map per
// image, which is most of what the normalization costs the apiserver.
var refsVar = `variables.images.map(m, {'f': m.f, 'i': m.i, 'c': m.c, 'k': ` + kindOf("m.i") + `, ` +
	// n: the name (a plain name has ':' only before a port, and a port only before '/');
	// x: the first path component; d: the digest.
	`'n': m.i.find('` + celRegex(nameRE) + `'), 'x': m.i.split('/')[0], 'd': m.i.contains('@') ? m.i.substring(m.i.indexOf('@') + 1) : ''})` +
	// t: the tag, after the name; h: the host by the runtime's rule, without the default
	// HTTPS port, Docker Hub's names as one; p: the path as that host reads it, under
	// library/ for a one-segment Docker Hub name.
	`.map(m, {'f': m.f, 'i': m.i, 'c': m.c, 'k': m.k, 'd': m.d, ` +
	`'t': m.i.substring(size(m.n)).startsWith(':') ? m.i.substring(size(m.n) + 1).split('@')[0] : '', ` +
	`'h': ` + dockerHub + ` ? 'docker.io' : (m.x.endsWith(':443') ? m.x.substring(0, size(m.x) - 4) : m.x), ` +
	`'p': ` + dockerHub + ` && !` + pathOf + `.contains('/') ? 'library/' + ` + pathOf + ` : ` + pathOf + `})`

// nameRE is the name part of a plain reference: what precedes its tag and digest.
const nameRE = `^[^:@]*(?::[0-9]+/[^:@]*)?`

// dockerHub is whether the name m.n (first path component m.x) is on Docker Hub: no host by
// the runtime's rule, or one of Docker Hub's names, with or without the default HTTPS port.
// pathOf is the path of m.n as its host reads it.
var (
	dockerHub = `(!` + hostRule("m.n", "m.x") + ` || m.x in ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com', ` +
		`'docker.io:443', 'index.docker.io:443', 'registry-1.docker.io:443', 'registry.hub.docker.com:443'])`
	pathOf = `(` + hostRule("m.n", "m.x") + ` ? m.n.substring(size(m.x) + 1) : m.n)`
)

// opening is the start of every message about the image r: "FIELD: image "I"", and
// " (NORMALIZED)" unless the same (policy.Violation.Message).
const opening = `r.f + ': image "' + r.i + '"' + (r.k == 'p' && ` + normalized + ` != r.i ? ' (' + ` + normalized + ` + ')' : '')`

// normalized is the normalized form of the plain reference r (imageref.Reference.Normalized).
// Its host is written as the canonical host unless that would read as a Docker Hub path
// (imageref's displayHost): a plain host without a dot, a port or the name localhost is one
// only by its port, and the port it lost was the default one, so it is written with :443.
const normalized = `((r.h.contains('.') || r.h.contains(':') || r.h == 'localhost' ? r.h : r.h + ':443') + '/' + r.p + (r.t != '' ? ':' + r.t : '') + (r.d != '' ? '@' + r.d : ''))`

// patternMatch is the CEL that says whether the pattern matches the plain reference r
// (imageref.Pattern.Match): the same canonical host, a path the globs match, and the
// pattern's tag or digest when it names one.
func patternMatch(p *imageref.Pattern, r string) string {
	var parts []string
	parts = append(parts, r+".h == "+quote(p.Host))
	switch {
	case len(p.Segments) == 1 && p.Segments[0] == "**":
	case !slices.ContainsFunc(p.Segments, imageref.HasGlob):
		parts = append(parts, r+".p == "+quote(p.Path))
	case p.Segments[len(p.Segments)-1] == "**" && !slices.ContainsFunc(p.Segments[:len(p.Segments)-1], imageref.HasGlob):
		// The common a/b/** : the path itself or anything below it, without a regular
		// expression.
		prefix := strings.Join(p.Segments[:len(p.Segments)-1], "/")
		parts = append(parts, "("+r+".p == "+quote(prefix)+" || "+r+".p.startsWith("+quote(prefix+"/")+"))")
	default:
		parts = append(parts, "('/' + "+r+".p).matches("+quote(segmentsRegex(p.Segments))+")")
	}
	switch {
	case p.Digest != "":
		parts = append(parts, r+".d == "+quote(p.Digest))
	case p.Tag != "":
		parts = append(parts, r+".d == '' && ("+r+".t == '' ? 'latest' : "+r+".t) == "+quote(p.Tag))
	}
	return "(" + strings.Join(parts, " && ") + ")"
}

// segmentsRegex is imageref.MatchSegments as an RE2 expression over "/" + path: "**" is any
// number of whole segments, "*" any run of characters but "/".
func segmentsRegex(segs []string) string { return "^" + segmentsBody(segs, `[^/]`) + "$" }

// segmentsBody is segments' expression over "/" + path, unanchored, with chars the class of a
// segment's characters.
func segmentsBody(segs []string, chars string) string {
	var b strings.Builder
	for _, s := range segs {
		if s == "**" {
			b.WriteString(`(?:/` + chars + `+)*`)
			continue
		}
		b.WriteString("/" + segmentRegex(s, chars))
	}
	return b.String()
}

// segmentRegex matches one segment that the pattern segment s matches ("*": any run of
// chars).
func segmentRegex(s, chars string) string {
	parts := strings.Split(s, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return strings.Join(parts, chars+`*`)
}

// selectorCEL is a label selector over the labels expression l, in CEL (labels.Selector's
// semantics: NotIn and DoesNotExist hold where the key is absent). "true" for nil or empty.
func selectorCEL(ls *metav1.LabelSelector, l string) string {
	if ls == nil {
		return "true"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(ls.MatchLabels)) {
		parts = append(parts, fmt.Sprintf("(%[2]s in %[1]s && %[1]s[%[2]s] == %[3]s)", l, quote(k), quote(ls.MatchLabels[k])))
	}
	for _, e := range ls.MatchExpressions {
		k := quote(e.Key)
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			parts = append(parts, fmt.Sprintf("(%[2]s in %[1]s && %[1]s[%[2]s] in %[3]s)", l, k, quoteList(e.Values)))
		case metav1.LabelSelectorOpNotIn:
			parts = append(parts, fmt.Sprintf("(!(%[2]s in %[1]s) || !(%[1]s[%[2]s] in %[3]s))", l, k, quoteList(e.Values)))
		case metav1.LabelSelectorOpExists:
			parts = append(parts, fmt.Sprintf("(%s in %s)", k, l))
		case metav1.LabelSelectorOpDoesNotExist:
			parts = append(parts, fmt.Sprintf("!(%s in %s)", k, l))
		default:
			parts = append(parts, "false") // never compiled: the engine refuses such a policy as invalid
		}
	}
	if len(parts) == 0 {
		return "true"
	}
	return "(" + strings.Join(parts, " && ") + ")"
}

// quote writes s as a single-quoted CEL string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`).Replace(s) + "'"
}

func quoteList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
