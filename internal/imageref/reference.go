// Package image normalizes container image references and compiles the image patterns of
// policies, with one normalizer for both so that `nginx`, `library/nginx` and
// `docker.io/library/nginx` are the same image everywhere. It is pure: no I/O.
package imageref

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Reference is a parsed, normalized image reference.
type Reference struct {
	// Normalized is the fully qualified form, as reference.ParseNormalizedNamed prints it
	// (for example docker.io/library/nginx:1.27).
	Normalized string
	// Host is the registry host with its port, lowercased: DNS does not tell case apart, so
	// neither may a rule on hosts.
	Host string
	// Path is the repository path below the host (for example library/nginx).
	Path string
	// Tag is the tag as written, or "" when there is none.
	Tag string
	// Digest is the digest (algorithm:hex), or "" when there is none.
	Digest string
}

// EffectiveTag is the tag the runtime pulls: "" for a reference pinned by digest (the digest
// decides and the tag is ignored), "latest" for a reference with neither tag nor digest.
func (r *Reference) EffectiveTag() string {
	switch {
	case r.Digest != "":
		return ""
	case r.Tag == "":
		return "latest"
	default:
		return r.Tag
	}
}

// MaxReferenceLength bounds what Parse reads. A valid reference is far shorter: a name of at
// most 255 characters, a tag of 128, a sha512 digest of 135.
const MaxReferenceLength = 1024

// Parse parses and normalizes an image reference as a container runtime would. It never
// repairs its input (no lowercasing of the repository, no trimming): an image that does not
// parse is an error carrying the parser's reason.
func Parse(s string) (Reference, error) {
	if len(s) > MaxReferenceLength {
		// The reference grammar's regular expressions are linear, but on a megabyte string
		// (which Pod validation allows) that is most of a second per image.
		return Reference{}, fmt.Errorf("longer than %d characters (%d): no valid image reference is", MaxReferenceLength, len(s))
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Reference{}, err
	}
	r := Reference{
		Normalized: named.String(),
		Host:       reference.Domain(named),
		Path:       reference.Path(named),
	}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	r.Host, r.Path, err = lowerHost(r.Host, r.Path)
	if err != nil {
		return Reference{}, err
	}
	return r, nil
}

// lowerHost lowercases a registry host: DNS does not tell case apart, so neither may a rule on
// hosts. A host stays a host (Foo/bar pulls from the host Foo, never from Docker Hub), but an
// uppercase spelling of Docker Hub gets Docker Hub's normalization (DOCKER.IO/nginx is
// docker.io/library/nginx).
func lowerHost(host, path string) (string, string, error) {
	if !hasUpper(host) {
		return host, path, nil
	}
	host = strings.ToLower(host)
	if host != "docker.io" && host != "index.docker.io" {
		return host, path, nil
	}
	named, err := reference.ParseNormalizedNamed("docker.io/" + path)
	if err != nil {
		return "", "", err
	}
	return reference.Domain(named), reference.Path(named), nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
