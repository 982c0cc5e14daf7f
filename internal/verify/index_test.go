package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// TestIndexTrust: a multi-architecture image whose platform manifests are signed and
// attested but whose index is not, or the reverse, under each indexTrust and set of node
// platforms.
func TestIndexTrust(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	key, _ := rt.NewKey()
	push := func(tag string) (name.Digest, map[string]name.Digest) {
		t.Helper()
		idx, platforms, err := reg.PushIndex("acme/multi", tag, "linux/amd64", "linux/arm64")
		if err != nil {
			t.Fatal(err)
		}
		return idx, platforms
	}
	sign := func(d name.Digest, critical bool) {
		t.Helper()
		if err := key.Sign(d); err != nil {
			t.Fatal(err)
		}
		var vulns []rt.Vuln
		if critical {
			vulns = append(vulns, rt.Vuln{ID: "CVE-2026-7777", Severity: "CRITICAL"})
		}
		if err := key.Attest(d, rt.AttestationStatement(d, rt.CosignVuln, rt.TrivyPredicate(scanned, vulns...))); err != nil {
			t.Fatal(err)
		}
	}
	// Platforms signed and attested (arm64 with a Critical finding), the index not.
	byPlatform, platforms := push("platforms")
	sign(platforms["linux/amd64"], false)
	sign(platforms["linux/arm64"], true)
	// The index signed and attested, its platforms not.
	byIndex, _ := push("index")
	sign(byIndex, false)
	// Neither.
	unsigned, _ := push("unsigned")
	single := mustPush(t, reg, "acme/single", "1")
	sign(single, false)

	rules := func(trust v1alpha1.IndexTrust) *v1alpha1.VerifyRules {
		return &v1alpha1.VerifyRules{
			Signers: []v1alpha1.Signer{keySigner("ci", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip, IndexTrust: trust,
			Attestations: []v1alpha1.AttestationRule{{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln, Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh}}},
		}
	}
	clk := &clock{t: scanned.Add(time.Hour)}
	for _, c := range []struct {
		name  string
		trust v1alpha1.IndexTrust
		nodes []string
		image name.Digest
		want  string // "" admitted
	}{
		{"index: unsigned index", "", nil, byPlatform, "no signature by a trusted signer"},
		{"index: signed index", v1alpha1.IndexTrustIndex, nil, byIndex, ""},
		{"platforms: every platform, arm64's scan has a Critical", v1alpha1.IndexTrustPlatforms, nil, byPlatform,
			"its linux/arm64 manifest " + platforms["linux/arm64"].DigestStr() + ": its newest vulnerability scan (trivy 0.58.1, finished 2026-11-20T10:00:00Z) has 1 vulnerability above High: CVE-2026-7777 (Critical)"},
		{"platforms: amd64 nodes only", v1alpha1.IndexTrustPlatforms, []string{"linux/amd64"}, byPlatform, ""},
		{"platforms: arm64 nodes", v1alpha1.IndexTrustPlatforms, []string{"linux/arm64"}, byPlatform, "CVE-2026-7777 (Critical)"},
		{"platforms: no manifest for the nodes", v1alpha1.IndexTrustPlatforms, []string{"linux/s390x"}, byPlatform,
			"its index lists no manifest for the platforms of the cluster's nodes (linux/s390x); it lists linux/amd64, linux/arm64"},
		{"platforms: signed index, unsigned platforms", v1alpha1.IndexTrustPlatforms, []string{"linux/amd64"}, byIndex, "its linux/amd64 manifest"},
		{"platforms: not an index", v1alpha1.IndexTrustPlatforms, nil, single, ""},
		{"either: signed index", v1alpha1.IndexTrustEither, nil, byIndex, ""},
		{"either: signed platforms", v1alpha1.IndexTrustEither, []string{"linux/amd64"}, byPlatform, ""},
		{"either: neither", v1alpha1.IndexTrustEither, []string{"linux/amd64"}, unsigned,
			"the index is not trusted itself (no signature by a trusted signer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("multi", rules(c.trust))}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
			if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "multi"}); e != "" {
				t.Fatal(e)
			}
			v := verify.New(verify.Options{Now: clk.Now, Platforms: func() []string { return c.nodes }})
			o := decideAndReport(t, snap, v, c.image, c.want)
			if o == nil || c.trust != v1alpha1.IndexTrustPlatforms || c.image != byPlatform {
				return
			}
			if len(o.Attestations) != 1 || o.Attestations[0].Platform != "linux/amd64" {
				t.Fatalf("attestations = %+v, want the amd64 manifest's", o.Attestations)
			}
		})
	}
	// The node platforms are part of what a result is cached under: a node of another
	// platform joining changes the answer at once.
	nodes := []string{"linux/amd64"}
	v := verify.New(verify.Options{Now: clk.Now, Platforms: func() []string { return nodes }})
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("multi", rules(v1alpha1.IndexTrustPlatforms))}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	if d := decide(t, snap, v, byPlatform.String()); messages(&d) != "" {
		t.Fatalf("amd64 nodes: %s", messages(&d))
	}
	nodes = []string{"linux/amd64", "linux/arm64"}
	if d := decide(t, snap, v, byPlatform.String()); !strings.Contains(messages(&d), "CVE-2026-7777") {
		t.Fatalf("with an arm64 node: %q", messages(&d))
	}
}
