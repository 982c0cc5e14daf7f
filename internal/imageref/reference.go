// Package imageref normalizes container image references and compiles the image patterns of
// policies, with one normalizer for both so that `nginx`, `library/nginx` and
// `docker.io/library/nginx` are the same image everywhere. It is pure: no I/O.
package imageref

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// Reference is a parsed, normalized image reference.
type Reference struct {
	// Normalized is the fully qualified form with the canonical host (for example
	// docker.io/library/nginx:1.27 for nginx:1.27 or registry-1.docker.io/nginx:1.27).
	Normalized string
	// Host is the registry host with its port, in the canonical spelling of its endpoint (see
	// CanonicalHost).
	Host string
	// Path is the repository path below the host (for example library/nginx).
	Path string
	// Tag is the tag as written, or "" when there is none.
	Tag string
	// Digest is the digest (algorithm:hex), or "" when there is none.
	Digest string
}

// Repository is the repository as another parser must be given it (go-containerregistry's,
// to reach the registry): the normalized form without tag and digest. Host + "/" + Path is a
// comparison key, not a name: a host that is one only by its port or its uppercase letters
// (0:443, Foo) has a canonical Host that would read as a Docker Hub path.
func (r *Reference) Repository() string {
	n := r.Normalized
	if r.Digest != "" {
		n = strings.TrimSuffix(n, "@"+r.Digest)
	}
	if r.Tag != "" {
		n = strings.TrimSuffix(n, ":"+r.Tag)
	}
	return n
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

// ErrImageID says that a string could be taken by the container runtime as the ID of an image
// already on the node (see ImageIDLike).
var ErrImageID = errors.New("could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)")

// digestAlgorithms are the algorithms an image ID can be written in (go-digest's registered
// ones, and BLAKE3, which containerd can register).
var digestAlgorithms = []string{"sha256", "sha384", "sha512", "blake3"}

// ImageIDLike reports whether the container runtime could take s as an image ID or a prefix of
// one rather than as a name. containerd's CRI image service first tries the string as a digest
// (`sha256:<hex>`), then, when no image has that name, looks it up as an ID or an ID prefix in
// its digest set (`sha256:1a2b` finds any image whose ID starts so). The reference grammar reads
// the same string as the Docker Hub repository `sha256` with a tag, so a name-based rule would
// judge an image the Pod never names. A bare hex string is no danger: the kubelet adds
// `:latest` to a reference without tag or digest before the runtime sees it, and a bare
// 64-digit hex string does not parse.
func ImageIDLike(s string) bool {
	name, rest, ok := strings.Cut(s, ":")
	return ok && rest != "" && slices.Contains(digestAlgorithms, name)
}

// Parse parses and normalizes an image reference as a container runtime would. It never
// repairs its input (no lowercasing of the repository, no trimming): an image that does not
// parse is an error carrying the parser's reason. Registry spellings that reach the same
// endpoint are one host (see CanonicalHost). A string the runtime could take as an image ID is
// refused with ErrImageID.
func Parse(s string) (Reference, error) {
	if len(s) > MaxReferenceLength {
		// The reference grammar's regular expressions are linear, but on a megabyte string
		// (which Pod validation allows) that is most of a second per image.
		return Reference{}, fmt.Errorf("longer than %d characters (%d): no valid image reference is", MaxReferenceLength, len(s))
	}
	if ImageIDLike(s) {
		return Reference{}, ErrImageID
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Reference{}, err
	}
	r := Reference{}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	domain := reference.Domain(named)
	r.Host, r.Path = CanonicalHost(domain, reference.Path(named))
	r.Normalized = join(displayHost(r.Host, domain), r.Path, r.Tag, r.Digest)
	return r, nil
}

// displayHost is how a normalized form writes a canonical host: as is, unless lowercasing
// would change what the normalized form means, where it keeps the spelling as written so that
// the normalized form reparses the same:
//   - only its uppercase letters make it a host (Foo/bar pulls from the host foo, but foo/bar
//     is Docker Hub's);
//   - its lowercase spelling reads as an image ID (SHA256:5000/app pulls from the host
//     sha256:5000, but sha256:5000/app is refused as an ID the runtime looks up on the node).
func displayHost(host, written string) string {
	if ImageIDLike(host) {
		return written
	}
	if host == "" || strings.ContainsAny(host, ".:[") || host == "localhost" {
		return host
	}
	return written
}

func join(host, path, tag, digest string) string {
	n := path
	if host != "" {
		// No host: a first segment the reference grammar reads as a path though it has a dot
		// (0_0.0/x); kept as the parser reads it.
		n = host + "/" + path
	}
	if tag != "" {
		n += ":" + tag
	}
	if digest != "" {
		n += "@" + digest
	}
	return n
}

// dockerHubHosts are the names of Docker Hub's registry: a pull from any of them reaches the
// same repositories, so a rule on docker.io must hold for all of them.
var dockerHubHosts = map[string]bool{
	"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true, "registry.hub.docker.com": true,
}

// defaultPort is the port a registry host without one is reached on: runtimes speak HTTPS.
const defaultPort = 443

// CanonicalHost returns the one spelling of a registry host (with its port) among those that
// reach the same endpoint, and the repository path as that registry reads it:
//   - hosts are lowercased (DNS does not tell case apart);
//   - the default HTTPS port is dropped (ghcr.io:443 is ghcr.io), other ports are written
//     without leading zeros (:05000 is :5000);
//   - an IPv6 literal is written in its shortest form ([0:0:0:0:0:0:0:1] is [::1]), and an
//     IPv4-mapped one as the IPv4 address ([::ffff:7f00:1] is 127.0.0.1);
//   - Docker Hub's names (index.docker.io, registry-1.docker.io, registry.hub.docker.com, each
//     with or without :443) are docker.io, whose one-segment repositories are under library/.
//
// A host stays a host: Foo/bar pulls from the host foo, never from Docker Hub. Names that only
// DNS or node configuration make equal (localhost and 127.0.0.1, a mirror) are not the same
// host here: imagegate cannot see them.
func CanonicalHost(host, path string) (canonicalHost, canonicalPath string) {
	host = strings.ToLower(host)
	name, port := host, ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		name, port = host[:i], host[i+1:]
	}
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		if addr, err := netip.ParseAddr(name[1 : len(name)-1]); err == nil && addr.Zone() == "" {
			if addr = addr.Unmap(); addr.Is4() {
				name = addr.String()
			} else {
				name = "[" + addr.String() + "]"
			}
		}
	}
	if port != "" {
		// The grammar allows only digits here. Leading zeros never change the number, even
		// past 65535 (such a port cannot be dialled, but must not be two spellings either).
		port = strings.TrimLeft(port, "0")
		if port == "" {
			port = "0"
		}
		if n, err := strconv.ParseUint(port, 10, 16); err == nil && n == defaultPort {
			port = ""
		}
	}
	if port == "" && dockerHubHosts[name] {
		// Docker Hub puts a one-segment name under library/, whichever of its names is written
		// (the reference grammar's own rule, which it applies to docker.io alone).
		if !strings.Contains(path, "/") {
			path = "library/" + path
		}
		return dockerHub, path
	}
	if port != "" {
		return name + ":" + port, path
	}
	return name, path
}
