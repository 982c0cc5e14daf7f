package verify_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/verify"
)

// FuzzSelectPlatforms feeds arbitrary index manifests and node platforms to the choice of the
// platform manifests that indexTrust Platforms checks. Whatever the bytes: no panic; nothing
// is admitted unchecked, so either a reason is given or at least one and at most 16
// manifests are chosen; each chosen one is an image manifest listed in the index for a real
// platform (never BuildKit's unknown/unknown, never a nested index), and for one of the
// nodes' platforms when any node is known; and every listed image manifest for a node's
// platform is chosen.
func FuzzSelectPlatforms(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("a", 64)+`","size":1,"platform":{"os":"linux","architecture":"amd64"}},
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("b", 64)+`","size":1,"platform":{"os":"linux","architecture":"arm64"}},
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("c", 64)+`","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}`), "linux/amd64")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:`+strings.Repeat("d", 64)+`","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}`), "")
	f.Add([]byte(`{"manifests":[]}`), "linux/s390x,linux/amd64")
	f.Fuzz(func(t *testing.T, manifest []byte, nodeList string) {
		m, err := v1.ParseIndexManifest(bytes.NewReader(manifest))
		if err != nil {
			return
		}
		var nodes []string
		if nodeList != "" {
			nodes = strings.Split(nodeList, ",")
		}
		chosen, why := verify.SelectPlatforms(m, nodes)
		if why != "" {
			if len(chosen) > 0 {
				t.Fatalf("a reason (%s) and %d manifests", why, len(chosen))
			}
			return
		}
		if len(chosen) == 0 || len(chosen) > 16 {
			t.Fatalf("%d manifests chosen, and no reason", len(chosen))
		}
		for _, c := range chosen {
			listed := slices.ContainsFunc(m.Manifests, func(d v1.Descriptor) bool {
				return d.Digest.String() == c[1] && d.MediaType.IsImage() && d.Platform != nil && d.Platform.OS+"/"+d.Platform.Architecture == c[0]
			})
			if !listed || strings.HasPrefix(c[0], "unknown/") || strings.HasPrefix(c[0], "/") || (len(nodes) > 0 && !slices.Contains(nodes, c[0])) {
				t.Fatalf("chose %v, which is not an image manifest of the index for a node's platform", c)
			}
		}
		for _, d := range m.Manifests {
			if d.Platform == nil || !d.MediaType.IsImage() || d.Platform.OS == "" || d.Platform.OS == "unknown" {
				continue
			}
			p := d.Platform.OS + "/" + d.Platform.Architecture
			if (len(nodes) == 0 || slices.Contains(nodes, p)) && !slices.Contains(chosen, [2]string{p, d.Digest.String()}) {
				t.Fatalf("left %s (%s) unchecked", p, d.Digest)
			}
		}
	})
}
