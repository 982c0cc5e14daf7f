package vap

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// FuzzDifferential holds the generated policies to the engine on any images and any policy
// of one pattern and one tag: the apiserver's CEL must give the engine's messages in the
// engine's modes for every image it decides, and send the Pod to the webhook for every other
// (see differ). Created and updated Pods, with and without a podSelector.
func FuzzDifferential(f *testing.F) {
	for i, s := range images(f) {
		f.Add(s, "nginx:1.25", "ghcr.io/acme/app", "ghcr.io/acme/**", "latest", uint8(i))
	}
	f.Add("docker.io:443/cryptominer/xmrig", "index.docker.io/cryptominer/xmrig:1", "x", "docker.io/cryptominer/**", "dev", uint8(3))
	f.Add("ghcr.io/acme/a.b/c", "ghcr.io/acme/ab/c", "ghcr.io/acme/a.b/c", "ghcr.io/acme/a.b/*", "1.0", uint8(0x45))
	f.Fuzz(func(t *testing.T, img1, img2, oldImg, pattern, tag string, flags uint8) {
		if len(img1)+len(img2)+len(oldImg)+len(pattern) > 1500 {
			return
		}
		spec := v1alpha1.ImagePolicySpec{Mode: []v1alpha1.PolicyMode{v1alpha1.ModeEnforce, v1alpha1.ModeWarn, v1alpha1.ModeAudit}[int(flags>>6)%3]}
		switch flags & 3 {
		case 0:
			spec.Images.Allow = patterns(pattern)
		case 1:
			spec.Images.Deny = patterns("ghcr.io/other/*", pattern)
		case 2:
			spec.Images.Allow = patterns("ghcr.io/acme/**")
			spec.ExemptImages = patterns(pattern)
		default:
			spec.Images.Deny = patterns(pattern)
			spec.Images.Allow = patterns(pattern + "x")
		}
		if tag != "" && len(tag) <= 128 {
			spec.Tags.Deny = tags(tag)
		}
		spec.Tags.RequireTag = ptr.To(flags&4 != 0)
		spec.RequireDigest = ptr.To(flags&8 != 0)
		if flags&16 != 0 {
			spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
		}
		spec.AllowBreakGlass = ptr.To(flags&32 != 0)
		w := world{cluster: []v1alpha1.ClusterImagePolicy{cluster("fuzz", spec)}}
		h := newHarness(t, w)
		nsLabels := map[string]string{"kubernetes.io/metadata.name": "ns"}
		p := pod("ns", map[string]string{"app": "web"}, img1, img2)
		if flags&32 != 0 {
			p.Annotations = map[string]string{"x.image-policy.k8s.io/break-glass": "true"}
		}
		h.differ(t, p, nil, nsLabels)
		old := p.DeepCopy()
		old.Spec.Containers[0].Image = oldImg
		old.Labels = map[string]string{"app": "batch"}
		h.differ(t, p, old, nsLabels)
	})
}
