package imageref

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Placeholders stand for the globs while the real parser reads a pattern: they are valid
// path components, so the parser checks everything else about the pattern and normalizes it
// exactly as it normalizes images.
const (
	globStarPlaceholder = "0imagegateglobstar0"
	globPlaceholder     = "0imagegateglob0"
	reservedText        = "imagegateglob"

	dockerHub = "docker.io"
)

// Pattern is a compiled image pattern. Globs live only in the repository path: `*` matches
// within one path segment, `**` matches any number of whole segments (including none).
type Pattern struct {
	// Raw is the pattern as written in the policy.
	Raw string
	// Normalized is what the pattern means, fully qualified, with the canonical host
	// (ghcr.io/acme/*, or docker.io/library/nginx for nginx or registry-1.docker.io/nginx).
	Normalized string
	// Host is the registry host with its port, in canonical spelling (CanonicalHost); never a
	// glob.
	Host string
	// Path is the repository path, with its globs.
	Path string
	// Tag, when set, is the only tag the pattern matches.
	Tag string
	// Digest, when set, is the only digest the pattern matches.
	Digest string
	// Segments is Path split at "/".
	Segments []string
}

// ParsePattern compiles an image pattern. The error names what is wrong with it.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("pattern is empty")
	}
	if ImageIDLike(s) {
		return Pattern{}, errors.New("it could be read as an image ID (an algorithm, a colon and hex digits): a pattern names repositories, for example docker.io/library/nginx@sha256:<digest>")
	}
	if strings.Contains(s, reservedText) {
		return Pattern{}, fmt.Errorf("pattern contains the reserved text %q", reservedText)
	}
	name, rest := splitName(s)
	if strings.Contains(rest, "*") {
		return Pattern{}, errors.New("globs are not allowed in a tag or digest: a pattern matches one tag or one digest, or all of them when it has neither")
	}
	if host, ok := hostOf(name); ok && strings.Contains(host, "*") {
		return Pattern{}, errors.New("a registry host cannot contain * or **: name the registry exactly, for example ghcr.io/acme/*")
	}
	for seg := range strings.SplitSeq(name, "/") {
		if strings.Contains(seg, "**") && seg != "**" {
			return Pattern{}, errors.New("** must be a whole path segment, for example ghcr.io/acme/**")
		}
	}
	masked := strings.ReplaceAll(strings.ReplaceAll(name, "**", globStarPlaceholder), "*", globPlaceholder) + rest
	named, err := reference.ParseNormalizedNamed(masked)
	writtenPath := ""
	if errors.Is(err, reference.ErrNameTooLong) {
		// The placeholders are longer than the globs they stand for, and the parser's length
		// limit is on the path as the runtime would see it: check the grammar with one-character
		// stand-ins (as valid wherever the placeholders are), and take the path as written. The
		// host has no glob, so the parser's domain is exact. The stand-in is not a hex digit:
		// "0" would turn 000...*0 into 64 hex digits, which the parser refuses as an image ID
		// although the pattern is not one.
		named, err = reference.ParseNormalizedNamed(strings.ReplaceAll(strings.ReplaceAll(name, "**", "z"), "*", "z") + rest)
		writtenPath = remainder(name)
	}
	if err != nil {
		// The parser's reason, with the placeholders turned back into the globs the user wrote.
		return Pattern{}, errors.New(unmask(err.Error()))
	}
	p := Pattern{
		Raw:  s,
		Path: reference.Path(named),
	}
	if writtenPath != "" {
		p.Path = writtenPath
	}
	if t, ok := named.(reference.Tagged); ok {
		p.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		p.Digest = d.Digest().String()
	}
	domain := reference.Domain(named)
	p.Host, p.Path = CanonicalHost(domain, p.Path)
	p.Path = unmask(p.Path)
	if len(p.Path) > reference.RepositoryNameTotalLengthMax {
		return Pattern{}, reference.ErrNameTooLong
	}
	if p.Host == dockerHub && p.Path == "library/**" && remainder(name) == "**" {
		// Docker Hub puts a one-segment name under library/, but ** spans segments: a user who
		// writes docker.io/** (or **) means all of Docker Hub, and reading it as library/**
		// would let docker.io/acme/app past a deny rule.
		p.Path = "**"
	}
	p.Segments = strings.Split(p.Path, "/")
	// Patterns are written in the same canonical form as images, so ghcr.io:443/evil/** and
	// registry-1.docker.io/** mean what a pull from those hosts reaches.
	p.Normalized = join(displayHost(p.Host, domain), p.Path, p.Tag, p.Digest)
	return p, nil
}

// splitName splits a pattern into its name and the tag and digest part after it (":tag",
// "@digest" or both, with their separators).
func splitName(s string) (name, rest string) {
	end := len(s)
	if at := strings.IndexByte(s, '@'); at >= 0 {
		end = at
	}
	if colon := strings.LastIndexByte(s[:end], ':'); colon > strings.LastIndexByte(s[:end], '/') {
		end = colon
	}
	return s[:end], s[end:]
}

// hostOf returns the first path component of name when it is a registry host, by the rule
// every container runtime applies: it contains "." or ":", or it is "localhost", or it has
// an uppercase letter (which a repository path cannot have).
func hostOf(name string) (string, bool) {
	slash := strings.IndexByte(name, '/')
	if slash < 0 {
		return "", false
	}
	first := name[:slash]
	return first, strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first
}

// remainder is the name without its registry host.
func remainder(name string) string {
	if host, ok := hostOf(name); ok {
		return name[len(host)+1:]
	}
	return name
}

func unmask(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, globStarPlaceholder, "**"), globPlaceholder, "*")
}

// HasGlob reports whether a path segment of a pattern is or contains a glob.
func HasGlob(segment string) bool { return strings.IndexByte(segment, '*') >= 0 }

// Match reports whether the pattern matches the image reference: the same host, a path
// that the globs match, and the pattern's tag or digest when it names one. The digest
// decides: a reference with a digest never matches a pattern that names only a tag, and a
// reference with neither runs as :latest.
func (p *Pattern) Match(r *Reference) bool {
	return p.Host == r.Host && MatchSegments(p.Segments, r.Path) && p.MatchVersion(r)
}

// MatchVersion reports whether the reference's tag or digest is one the pattern allows.
func (p *Pattern) MatchVersion(r *Reference) bool {
	switch {
	case p.Digest != "":
		return r.Digest == p.Digest
	case p.Tag != "":
		return r.EffectiveTag() == p.Tag
	default:
		return true
	}
}

// MatchSegments reports whether the pattern segments match the slash-separated path, where
// a segment "**" matches any number of whole path segments (including none) and "*" inside
// a segment matches any characters but "/". It is the classic wildcard walk with one
// backtracking point, applied to segments: O(len(segs)*len(path)) whatever the pattern, so a
// hostile pattern cannot make admission slow, and it does not allocate.
func MatchSegments(segs []string, path string) bool {
	if path == "" {
		// No segment left: only "**" can match nothing.
		return allGlobStar(segs)
	}
	n := len(path)
	p, i := 0, 0 // next pattern segment; start of the next path segment (past n: none left)
	starP, starI := -1, 0
	for i <= n {
		if p < len(segs) && segs[p] == "**" {
			starP, starI = p, i
			p++
			continue
		}
		end := segmentEnd(path, i)
		if p < len(segs) && matchSegment(segs[p], path[i:end]) {
			p, i = p+1, end+1
			continue
		}
		if starP < 0 {
			return false
		}
		// Let the last "**" take one more path segment and try the rest again from there.
		starI = segmentEnd(path, starI) + 1
		p, i = starP+1, starI
	}
	return allGlobStar(segs[p:])
}

func allGlobStar(segs []string) bool {
	for _, s := range segs {
		if s != "**" {
			return false
		}
	}
	return true
}

func segmentEnd(path string, i int) int {
	if slash := strings.IndexByte(path[i:], '/'); slash >= 0 {
		return i + slash
	}
	return len(path)
}

// matchSegment matches one path segment against a pattern segment in which "*" matches any
// run of characters, by the classic backtracking wildcard walk (linear in practice, no
// allocation).
func matchSegment(pat, s string) bool {
	if !HasGlob(pat) {
		return pat == s
	}
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && pat[p] == '*':
			starP, starI = p, i
			p++
		case p < len(pat) && pat[p] == s[i]:
			p++
			i++
		case starP >= 0:
			p = starP + 1
			starI++
			i = starI
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}
