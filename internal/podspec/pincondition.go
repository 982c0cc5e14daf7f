package podspec

import (
	"fmt"
	"strings"

	"github.com/imagegate/imagegate/internal/policy"
)

// maxPinEntries and maxPinCondition bound the pinning webhook's condition well within the
// apiserver's limits (100,000 characters an expression, a cost budget per request): beyond,
// it sends every Pod with an unpinned image, as an installation without the condition does.
const (
	maxPinEntries   = 512
	maxPinCondition = 60000
)

// ImagesCEL is every image reference of a Pod, in CEL: containers, init and ephemeral
// containers, and image volumes (an empty string where none is written).
const ImagesCEL = `(object.spec.containers.map(c, has(c.image) ? c.image : '') + ` +
	`(has(object.spec.initContainers) ? object.spec.initContainers.map(c, has(c.image) ? c.image : '') : []) + ` +
	`(has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers.map(c, has(c.image) ? c.image : '') : []) + ` +
	`(has(object.spec.volumes) ? object.spec.volumes.filter(v, has(v.image)).map(v, has(v.image.reference) ? v.image.reference : '') : []))`

// AnyImageCEL is whether pred, a CEL predicate on the image its argument names, holds for
// some image of the Pod (ImagesCEL's), over the Pod's lists in place rather than one list
// built from them (which costs the apiserver more than the predicates). A container or image
// volume with no image counts as one for which pred holds: such a Pod is sent.
func AnyImageCEL(pred func(i string) string) string {
	list := func(l string) string {
		return "object.spec." + l + ".exists(c, !has(c.image) || " + pred("c.image") + ")"
	}
	return "(" + list("containers") +
		" || (has(object.spec.initContainers) && " + list("initContainers") + ")" +
		" || (has(object.spec.ephemeralContainers) && " + list("ephemeralContainers") + ")" +
		" || (has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.image) && (!has(v.image.reference) || " + pred("v.image.reference") + "))))"
}

// MaxDirect bounds a predicate that AnyImageCEL writes once per list of the Pod; a longer one
// is written once, over ImagesCEL.
const MaxDirect = 4096

// unpinned keeps the images not pinned by digest.
const unpinned = `.map(i, string(i)).filter(i, !i.contains('@'))`

// PinCondition is the CEL match condition that sends a Pod to the pinning webhook only when
// one of its images is not pinned by digest and a verify rule may cover it (entries, from
// policy.Snapshot.PinScope): "false" with no verify rule at all. It is a superset of the
// images the engine pins (FuzzPinCondition holds it to that): a Pod it lets through unpinned
// that a verify rule covers is refused by the validating webhook ("not pinned"), never
// admitted unverified. Per image it looks for an entry of the Pod's namespace (or of every
// namespace) whose needles (hintNeedles) all appear in the lowercased reference: substring
// searches, not a parse of each image.
func PinCondition(entries []policy.PinEntry) string {
	switch {
	case len(entries) == 0:
		return "false"
	case len(entries) > maxPinEntries:
		return "true"
	}
	seen := map[[3]string]bool{}
	var list strings.Builder
	list.WriteByte('[')
	for _, e := range entries {
		needles := hintNeedles(e)
		if len(needles) == 0 && e.Namespace == "" {
			// An entry of every namespace that covers every image: any unpinned image.
			return AnyImageCEL(func(i string) string { return "!" + i + ".contains('@')" })
		}
		k := [3]string{e.Namespace}
		copy(k[1:], needles)
		if seen[k] {
			continue
		}
		seen[k] = true
		if len(seen) > 1 {
			list.WriteString(", ")
		}
		fmt.Fprintf(&list, "[%s, %s, %s]", celString(k[0]), celString(k[1]), celString(k[2]))
	}
	list.WriteByte(']')
	if list.Len() > maxPinCondition {
		return "true"
	}
	if list.Len() <= MaxDirect {
		return AnyImageCEL(func(i string) string {
			return "!" + i + ".contains('@') && " + list.String() +
				".exists(e, (e[0] == '' || e[0] == request.namespace) && " + i + ".lowerAscii().contains(e[1]) && " + i + ".lowerAscii().contains(e[2]))"
		})
	}
	return ImagesCEL + unpinned + ".map(i, i.lowerAscii()).exists(i, " + list.String() +
		".exists(e, (e[0] == '' || e[0] == request.namespace) && i.contains(e[1]) && i.contains(e[2])))"
}

// celString quotes s as a CEL string literal. Policy names, hosts and paths hold no quote or
// backslash (the API's grammar), but they are escaped anyway.
func celString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// VerifyHint is a CEL predicate on one image reference (the CEL variable named i) that holds
// whenever a verify rule (entries, from policy.Snapshot.PinScope) may cover the image, and
// for more: some entry's host and repository path prefix both appear in the reference as
// written, lowercased (Docker Hub's host and library/ are not looked for, since a reference
// may leave them out). It reads no part of the reference's structure, so it costs a few
// substring searches per image where PinCondition normalizes each one: a coarser superset,
// for a condition that also sends every image it cannot be sure of (--admission-policies). It
// is "false" with no entries and "true" when an entry covers every image.
func VerifyHint(entries []policy.PinEntry, i string) string {
	if len(entries) == 0 {
		return "false"
	}
	if len(entries) > maxPinEntries {
		return "true"
	}
	seen := map[string]bool{}
	var alternatives []string
	for _, e := range entries {
		needles := hintNeedles(e)
		if len(needles) == 0 {
			return "true"
		}
		var all []string
		for _, n := range needles {
			all = append(all, i+".lowerAscii().contains("+celString(n)+")")
		}
		alt := strings.Join(all, " && ")
		if !seen[alt] {
			seen[alt] = true
			alternatives = append(alternatives, "("+alt+")")
		}
	}
	out := strings.Join(alternatives, " || ")
	if len(out) > maxPinCondition {
		return "true"
	}
	return out
}

// hintNeedles is what every reference an entry may cover holds, lowercased, as written: the
// entry's host ('[' for any IPv6 literal; nothing for Docker Hub, whose host a reference may
// leave out) and its path prefix (without library/, which a Docker Hub reference may leave
// out too). None when the entry may cover any reference.
func hintNeedles(e policy.PinEntry) []string {
	var needles []string
	switch {
	case e.Host == "" || e.Host == "docker.io":
	case strings.HasPrefix(e.Host, "["):
		needles = append(needles, "[")
	default:
		needles = append(needles, strings.ToLower(e.Host))
	}
	const library = "library/"
	if p := strings.ToLower(e.PathPrefix); p != "" && (len(p) > len(library) || library[:len(p)] != p) {
		if t := strings.TrimPrefix(p, library); t != "" {
			needles = append(needles, t)
		}
	}
	return needles
}
