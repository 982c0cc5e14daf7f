package verify

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/text"
)

// maxPlatforms bounds the platform manifests of one index that are checked: an index may
// list any number, and each costs a lookup.
const maxPlatforms = 16

// byPlatform reports whether the rule checks an index's platform manifests (indexTrust
// Platforms or Either).
func (t *Trust) byPlatform() bool {
	return t.indexTrust == v1alpha1.IndexTrustPlatforms || t.indexTrust == v1alpha1.IndexTrustEither
}

// nodePlatforms is what Options.Platforms says, or nil.
func (v *Verifier) nodePlatforms() []string {
	if v.platforms == nil {
		return nil
	}
	return v.platforms()
}

// platformManifest is one manifest an index lists for a platform.
type platformManifest struct {
	platform, digest string
}

// check verifies repo@digest as the rule's indexTrust says: an index itself (Index), each of
// its platform manifests for the nodes' platforms (Platforms), or either. An image that is
// not an index is checked as itself.
func (v *Verifier) check(ctx context.Context, trust *Trust, repo, digest string) *Outcome {
	if !trust.byPlatform() {
		return v.checkDigest(ctx, trust, repo, digest)
	}
	ref, err := name.NewDigest(repo+"@"+digest, name.StrictValidation)
	if err != nil {
		return &Outcome{Reason: fmt.Sprintf("%q is not a reference the registry client takes: %v", repo+"@"+digest, err)}
	}
	start := time.Now()
	desc, err := remote.Get(ref, v.remoteOptions(ctx, ref.Context().Registry, trust)...)
	v.metrics.registry("index", start)
	if err != nil {
		return &Outcome{Reason: registryError(ref.RegistryStr(), "reading its manifest", err).Error(), transient: isTransient(err)}
	}
	if !desc.MediaType.IsIndex() {
		return v.checkDigest(ctx, trust, repo, digest)
	}
	var indexReason string
	if trust.indexTrust == v1alpha1.IndexTrustEither {
		o := v.checkDigest(ctx, trust, repo, digest)
		if o.Reason == "" || o.transient {
			return o
		}
		indexReason = o.Reason
	}
	platforms, why := v.platformManifests(desc)
	fail := func(o *Outcome, reason string) *Outcome {
		if indexReason != "" {
			reason = "the index is not trusted itself (" + indexReason + "), nor by its platforms: " + reason
		}
		o.Reason = text.Cut(reason, maxReasonLength)
		return o
	}
	if why != "" {
		return fail(&Outcome{}, why)
	}
	out := &Outcome{}
	for _, p := range platforms {
		o := v.checkDigest(ctx, trust, repo, p.digest)
		if o.Reason != "" {
			return fail(&Outcome{Findings: o.Findings, transient: o.transient}, fmt.Sprintf("its %s manifest %s: %s", p.platform, p.digest, o.Reason))
		}
		for _, a := range o.Attestations {
			a.Platform = p.platform
			out.Attestations = append(out.Attestations, a)
		}
		for _, n := range o.Notes {
			out.Notes = append(out.Notes, p.platform+": "+n)
		}
		out.Expires = earliest(out.Expires, o.Expires)
		out.ScanExpires = earliest(out.ScanExpires, o.ScanExpires)
	}
	return out
}

// platformManifests picks the manifests of an index to check: those for the nodes'
// platforms, or every platform it lists when no node is known; never an attestation
// manifest (platform unknown/unknown, as BuildKit writes) or a nested index. It says why
// none can be checked, or too many.
func (v *Verifier) platformManifests(desc *remote.Descriptor) ([]platformManifest, string) {
	m, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Sprintf("its index cannot be read: %v", err)
	}
	return selectPlatforms(m, v.nodePlatforms())
}

// selectPlatforms picks the manifests of index m to check for the nodes' platforms (every
// platform when nodes is empty).
func selectPlatforms(m *v1.IndexManifest, nodes []string) ([]platformManifest, string) {
	var out []platformManifest
	var listed []string
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" || d.Platform.OS == "" || !d.MediaType.IsImage() {
			continue
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		listed = append(listed, p)
		if len(nodes) > 0 && !slices.Contains(nodes, p) {
			continue
		}
		out = append(out, platformManifest{platform: p, digest: d.Digest.String()})
	}
	switch {
	case len(out) == 0 && len(nodes) > 0:
		return nil, fmt.Sprintf("its index lists no manifest for the platforms of the cluster's nodes (%s); it lists %s", strings.Join(nodes, ", "), orNone(listed))
	case len(out) == 0:
		return nil, "its index lists no platform manifest"
	case len(out) > maxPlatforms:
		return nil, fmt.Sprintf("its index lists %d platform manifests to check, more than %d", len(out), maxPlatforms)
	}
	return out, ""
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
