package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
	"github.com/imagegate/imagegate/test/utils/tuftest"
)

// remoteSources is imagegate's namespace in memory, with a Remote for what lives outside.
type remoteSources struct {
	*sources
	*verify.Remote
}

// sigstoreRepo is a Sigstore and a TUF repository publishing its trusted root.
func sigstoreRepo(t *testing.T) (*registrytest.Sigstore, []byte, *tuftest.Repo) {
	t.Helper()
	ss, err := registrytest.NewSigstore()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ss.TrustedRootJSON()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := tuftest.New(tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	return ss, tr, repo
}

func TestTUFRoots(t *testing.T) {
	reg := registrytest.New(true)
	t.Cleanup(reg.Close)
	public, _, publicRepo := sigstoreRepo(t)
	github, githubRoot, githubRepo := sigstoreRepo(t)
	changed := make(chan struct{}, 64)
	remote := &verify.Remote{TUF: verify.TUFOptions{HTTPClient: publicRepo.Client(), CacheDir: t.TempDir()}, OnChange: func() { changed <- struct{}{} }}
	// One client trusts both test servers' certificates (httptest's share theirs).
	src := remoteSources{sources: &sources{configMaps: map[string]*corev1.ConfigMap{
		"public-tuf": {Data: map[string]string{"root.json": string(publicRepo.InitialRoot())}},
		"github-tuf": {Data: map[string]string{"root.json": string(githubRepo.InitialRoot())}},
		"wrong-tuf":  {Data: map[string]string{"root.json": string(githubRepo.InitialRoot())}},
	}}, Remote: remote}
	wait := func() {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(20 * time.Second):
			t.Fatal("OnChange was not called")
		}
	}
	drain := func() {
		for {
			select {
			case <-changed:
			default:
				return
			}
		}
	}
	roots := func(rs ...v1alpha1.TUFRoot) *policy.Snapshot {
		rules := &v1alpha1.VerifyRules{
			Signers:  []v1alpha1.Signer{keyless("ci", v1alpha1.Identity{Issuer: "https://issuer.example", Subject: "ci@acme.example"})},
			TUFRoots: rs, TransparencyLog: v1alpha1.TransparencyLogRequired,
		}
		return policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("kms", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
	}
	publicTUF := v1alpha1.TUFRoot{Mirror: publicRepo.URL, Root: v1alpha1.TUFRootReference{Name: "public-tuf"}}
	githubTUF := v1alpha1.TUFRoot{Mirror: githubRepo.URL, Root: v1alpha1.TUFRootReference{Name: "github-tuf"}}
	sign := func(ss *registrytest.Sigstore, tag string) name.Digest {
		t.Helper()
		d := mustPush(t, reg, "acme/tuf", tag)
		if err := ss.SignBundle(d, registrytest.Statement(d, ctypes.CosignSignPredicateType), "ci@acme.example", "https://issuer.example"); err != nil {
			t.Fatal(err)
		}
		return d
	}
	byPublic, byGitHub := sign(public, "public"), sign(github, "github")

	if e := policyError(roots(publicTUF)); !strings.Contains(e, "the trusted root of "+publicRepo.URL+" is being fetched from its TUF repository") {
		t.Fatalf("before the first fetch: %q", e)
	}
	wait()
	snap := roots(publicTUF)
	if e := policyError(snap); e != "" {
		t.Fatal(e)
	}
	v := verify.New(verify.Options{})
	before := publicRepo.Requests()
	expectVerdict(t, messages(ptr(decide(t, snap, v, byPublic.String()))), "")
	expectVerdict(t, messages(ptr(decide(t, snap, v, byGitHub.String()))), "no signature by a trusted signer")
	if n := publicRepo.Requests(); n != before {
		t.Errorf("admissions made %d requests to the TUF repository", n-before)
	}

	t.Run("several roots at once", func(t *testing.T) {
		drain()
		_ = roots(publicTUF, githubTUF)
		wait()
		snap := roots(publicTUF, githubTUF)
		if e := policyError(snap); e != "" {
			t.Fatal(e)
		}
		v := verify.New(verify.Options{})
		expectVerdict(t, messages(ptr(decide(t, snap, v, byPublic.String()))), "")
		expectVerdict(t, messages(ptr(decide(t, snap, v, byGitHub.String()))), "")
	})

	t.Run("an outage keeps the root fetched", func(t *testing.T) {
		publicRepo.Fail(true)
		defer publicRepo.Fail(false)
		verify.RemoteTick(remote, time.Now().Add(time.Hour))
		wait() // the round
		for deadline := time.Now().Add(60 * time.Second); verify.RemoteFetching(remote) > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("a fetch is still running after a minute")
			}
		}
		if e := policyError(roots(publicTUF)); e != "" {
			t.Errorf("a TUF outage made the policy invalid: %s", e)
		}
	})

	t.Run("a rotated root and a new trusted root are followed from the pinned one", func(t *testing.T) {
		// The public repository rotates its root keys and now publishes GitHub's trusted root.
		if err := publicRepo.RotateRoot(githubRoot); err != nil {
			t.Fatal(err)
		}
		verify.RemoteTick(remote, time.Now().Add(2*time.Hour))
		deadline := time.Now().Add(20 * time.Second)
		for {
			snap := roots(publicTUF)
			got := messages(ptr(decide(t, snap, verify.New(verify.Options{}), byGitHub.String())))
			if got == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the new trusted root was not taken: %s (policy: %s)", got, policyError(snap))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("a repository whose metadata another root signed", func(t *testing.T) {
		wrong := v1alpha1.TUFRoot{Mirror: publicRepo.URL + "/", Root: v1alpha1.TUFRootReference{Name: "wrong-tuf"}}
		drain()
		_ = roots(wrong)
		wait()
		e := policyError(roots(wrong))
		t.Logf("policy error: %s", e)
		if !strings.Contains(e, "could not be fetched from its TUF repository") {
			t.Errorf("got %q", e)
		}
	})

	t.Run("a root is required but for Sigstore's public instance", func(t *testing.T) {
		if e := policyError(roots(v1alpha1.TUFRoot{Mirror: "https://tuf.example"})); !strings.Contains(e, "root is required for https://tuf.example") {
			t.Errorf("got %q", e)
		}
	})
}
