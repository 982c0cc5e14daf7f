package preflight

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

func compile(spec v1alpha1.ImagePolicySpec) (*policy.Snapshot, policy.Ref) {
	cp := v1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u", Generation: 2}, Spec: spec}
	return policy.CompileWith([]v1alpha1.ClusterImagePolicy{cp}, nil, policy.Options{AsWritten: true}), policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "p"}
}

func running(ns, name, image, digest string) *Pod {
	return &Pod{Namespace: ns, Name: name, Subject: policy.Subject{
		Namespace: ns, NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns},
		Images: []policy.Image{{Field: "spec.containers[0].image", Ref: image, Container: "c0", Running: digest}},
	}}
}

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestWarnings(t *testing.T) {
	spec := v1alpha1.ImagePolicySpec{
		Enforcement: v1alpha1.EnforceAfterCleanAudit,
		Images:      v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}},
		Verify:      v1alpha1.VerifyRules{Images: []v1alpha1.ImagePattern{"ghcr.io/acme/signed/**"}, Signers: []v1alpha1.Signer{{Name: "ci"}}},
	}
	snap, ref := compile(spec)
	j := New(snap, ref, v1alpha1.ModeEnforce, true, nil)
	ctx := context.Background()
	for i := range 7 {
		j.Add(ctx, running("team-a", fmt.Sprintf("miner-%d", i), "quay.io/evil/miner:1", ""))
	}
	j.Add(ctx, running("team-b", "legacy", "docker.io/library/nginx:1", ""))
	j.Add(ctx, running("team-b", "web", "ghcr.io/acme/web:1", ""))
	j.Add(ctx, running("team-b", "api", "ghcr.io/acme/signed/api:1", digest))
	j.Add(ctx, running("team-c", "tagged", "ghcr.io/acme/signed/api:1", ""))
	got := j.Result().Warnings(true)
	want := []string{
		`ClusterImagePolicy "p" would refuse 8 of the 11 running Pods it covers at their next restart (team-a: 7, team-b: 1)`,
		`would refuse team-a/miner-0: spec.containers[0].image: image "quay.io/evil/miner:1" is not allowed by ClusterImagePolicy "p": it matches no pattern in images.allow`,
	}
	for i, w := range want {
		if i >= len(got) || got[i] != w {
			t.Fatalf("warning %d:\n got %q\nwant %q\n(all: %q)", i, got, w, got)
		}
	}
	joined := strings.Join(got, "\n")
	for _, w := range []string{
		"... and 3 more (",
		"2 running Pods run images that its verify rules have not verified yet, so whether it refuses them is not known: team-b/api, team-c/tagged",
		"enforcement AfterCleanAudit: the policy acts as Audit",
	} {
		if !strings.Contains(joined, w) {
			t.Errorf("missing %q in\n%s", w, joined)
		}
	}
	for _, w := range got {
		if len(w) > warningMax {
			t.Errorf("warning of %d characters: %q", len(w), w)
		}
	}

	j.Result().Keep(func(ns string) bool { return ns == "team-b" })
	if covered, refused, unverified := j.Result().Totals(); covered != 3 || refused != 1 || unverified != 1 {
		t.Errorf("after Keep: %d covered, %d refused, %d unverified", covered, refused, unverified)
	}
}

func TestQuiet(t *testing.T) {
	snap, ref := compile(v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}}})
	j := New(snap, ref, "", false, nil)
	j.Add(context.Background(), running("team-a", "web", "ghcr.io/acme/web:1", ""))
	if got := j.Result().Warnings(true); got != nil {
		t.Errorf("nothing refused, not a dry run: %q", got)
	}
	if got := j.Result().Warnings(false); len(got) != 1 || got[0] != `ClusterImagePolicy "p" would refuse none of the 1 running Pods it covers` {
		t.Errorf("dry run: %q", got)
	}
	j = New(snap, ref, v1alpha1.ModeWarn, false, nil)
	j.Add(context.Background(), running("team-a", "miner", "quay.io/evil/miner:1", ""))
	if got := j.Result().Warnings(false); got != nil {
		t.Errorf("a Warn policy refuses nothing: %q", got)
	}
}

// BenchmarkPreflight10000Pods judges 10,000 running Pods of 200 namespaces, 3 containers
// each, against a policy with an allow list: the preflight's work in the webhook, but for
// listing the Pods from the cache.
func BenchmarkPreflight10000Pods(b *testing.B) {
	snap, ref := compile(v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**", "registry.corp/**"}}})
	pods := make([]*Pod, 10000)
	for i := range pods {
		ns := fmt.Sprintf("team-%d", i%200)
		p := running(ns, fmt.Sprintf("pod-%d", i), fmt.Sprintf("ghcr.io/acme/app-%d:1", i%50), "")
		p.Subject.Images = append(p.Subject.Images,
			policy.Image{Field: "spec.containers[1].image", Ref: "registry.corp/sidecar:2", Container: "c1"},
			policy.Image{Field: "spec.containers[2].image", Ref: fmt.Sprintf("quay.io/legacy/tool-%d:1", i%7), Container: "c2"})
		pods[i] = p
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		j := New(snap, ref, v1alpha1.ModeEnforce, false, nil)
		for _, p := range pods {
			j.Add(ctx, p)
		}
		_ = j.Result().Warnings(false)
	}
}
