package policy

import (
	"slices"
	"strings"
)

// PinEntry is one place where a verify rule may cover an image: Pods in Namespace ("": any),
// images of registry Host (its name without port, in canonical spelling; "": any registry)
// whose repository path starts with PathPrefix. A PinScope is a superset: an image it does
// not cover needs no pin; one it covers may.
type PinEntry struct {
	Namespace  string
	Host       string
	PathPrefix string
}

// PinScope lists where the valid policies' verify rules may cover images, for the pinning
// webhook's match condition: nil when no policy verifies (no image ever needs a pin). The
// list is sorted and has no duplicates. A ClusterImagePolicy covers every namespace (its
// selector is not read: a superset), an ImagePolicy its own; a verify rule without images
// covers every registry.
func (s *Snapshot) PinScope() []PinEntry {
	var out []PinEntry
	for _, idx := range s.verifying {
		p := &s.policies[idx]
		ns := ""
		if p.ref.Kind == KindImagePolicy {
			ns = p.ref.Namespace
		}
		if p.verify.images == nil {
			out = append(out, PinEntry{Namespace: ns})
			continue
		}
		for i := range p.verify.images {
			pat := &p.verify.images[i]
			out = append(out, PinEntry{Namespace: ns, Host: hostName(pat.Host), PathPrefix: literalPrefix(pat.Path)})
		}
	}
	slices.SortFunc(out, func(a, b PinEntry) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.PathPrefix, b.PathPrefix)
	})
	return slices.Compact(out)
}

// hostName is a canonical host without its port: ports have several spellings, and a
// superset may ignore them. An IPv6 literal keeps its brackets.
func hostName(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.LastIndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	name, _, _ := strings.Cut(host, ":")
	return name
}

// literalPrefix is the part of a pattern's repository path before its first glob, without
// a slash that ends it: every path the pattern matches starts with it (acme/** also matches
// acme itself: ** may match no segment).
func literalPrefix(path string) string {
	if i := strings.IndexByte(path, '*'); i >= 0 {
		return strings.TrimSuffix(path[:i], "/")
	}
	return path
}
