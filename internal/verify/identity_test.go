package verify_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

const (
	githubIssuer = "https://token.actions.githubusercontent.com"
	releaseSHA   = "0123456789abcdef0123456789abcdef01234567"
	workflowPath = ".github/workflows/release.yml"
)

// keylessFixture is a registry, a Sigstore and its trusted root in imagegate's namespace.
type keylessFixture struct {
	reg *registrytest.Registry
	ss  *registrytest.Sigstore
	src *sources
}

func newKeylessFixture(t *testing.T) *keylessFixture {
	t.Helper()
	reg := registrytest.New(true)
	t.Cleanup(reg.Close)
	ss, err := registrytest.NewSigstore()
	if err != nil {
		t.Fatal(err)
	}
	rootJSON, err := ss.TrustedRootJSON()
	if err != nil {
		t.Fatal(err)
	}
	return &keylessFixture{reg: reg, ss: ss, src: &sources{configMaps: map[string]*corev1.ConfigMap{"sigstore": {Data: map[string]string{"trusted_root.json": string(rootJSON)}}}}}
}

// signed pushes an image and signs it as a GitHub Actions run with these extensions would.
func (f *keylessFixture) signed(t *testing.T, tag, subject, issuer string, ext certificate.Extensions) name.Digest {
	t.Helper()
	d := mustPush(t, f.reg, "acme/app", tag)
	if err := f.ss.SignBundleWithExtensions(d, registrytest.Statement(d, ctypes.CosignSignPredicateType), subject, issuer, ext); err != nil {
		t.Fatal(err)
	}
	return d
}

// verdict compiles rules into a ClusterImagePolicy and decides image with a fresh verifier.
func (f *keylessFixture) verdict(t *testing.T, rules *v1alpha1.VerifyRules, image name.Digest) string {
	t.Helper()
	if rules.TransparencyLog == "" {
		rules.TransparencyLog = v1alpha1.TransparencyLogRequired
	}
	rules.TrustedRoot = v1alpha1.ConfigMapKeyReference{Name: "sigstore"}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("keyless", rules)}, nil, policy.Options{Trust: verify.Compiler(f.src)})
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "keyless"}); e != "" {
		t.Fatal(e)
	}
	d := decide(t, snap, verify.New(verify.Options{}), image.String())
	return messages(&d)
}

// expectVerdict fails unless got (the refusals) is empty where want is, and says want.
func expectVerdict(t *testing.T, got, want string) {
	t.Helper()
	t.Logf("refusals: %q", got)
	switch {
	case want == "" && got != "":
		t.Errorf("refused: %s", got)
	case want != "" && !strings.Contains(got, want):
		t.Errorf("got %q, want it to say %q", got, want)
	}
}

func keyless(name string, ids ...v1alpha1.Identity) v1alpha1.Signer {
	return v1alpha1.Signer{Name: name, Keyless: v1alpha1.KeylessSigner{Identities: ids}}
}

func TestKeylessGitHubWorkflow(t *testing.T) {
	f := newKeylessFixture(t)
	subject := func(repo, ref string) string { return "https://github.com/" + repo + "/" + workflowPath + "@" + ref }
	release := f.signed(t, "release", subject("acme/app", "refs/tags/v1.2.0"), githubIssuer,
		registrytest.GitHubExtensions("acme/app", workflowPath, "refs/tags/v1.2.0", "push", releaseSHA))
	fork := f.signed(t, "fork", subject("evil/app", "refs/tags/v1.2.0"), githubIssuer,
		registrytest.GitHubExtensions("evil/app", workflowPath, "refs/tags/v1.2.0", "push", releaseSHA))
	branch := f.signed(t, "branch", subject("acme/app", "refs/heads/main"), githubIssuer,
		registrytest.GitHubExtensions("acme/app", workflowPath, "refs/heads/main", "push", releaseSHA))
	dispatched := f.signed(t, "dispatched", subject("acme/app", "refs/tags/v1.2.0"), githubIssuer,
		registrytest.GitHubExtensions("acme/app", workflowPath, "refs/tags/v1.2.0", "workflow_dispatch", releaseSHA))
	otherWorkflow := f.signed(t, "other-workflow", subject("acme/app", "refs/tags/v1.2.0"), githubIssuer,
		registrytest.GitHubExtensions("acme/app", ".github/workflows/nightly.yml", "refs/tags/v1.2.0", "push", releaseSHA))
	selfHosted := registrytest.GitHubExtensions("acme/app", workflowPath, "refs/tags/v1.2.0", "push", releaseSHA)
	selfHosted.RunnerEnvironment = "self-hosted"
	onOwnRunner := f.signed(t, "self-hosted", subject("acme/app", "refs/tags/v1.2.0"), githubIssuer, selfHosted)
	// A certificate from before 2023: only the older GitHub extensions.
	old := f.signed(t, "old", subject("acme/app", "refs/tags/v1.0.0"), githubIssuer, certificate.Extensions{
		GithubWorkflowTrigger: "push", GithubWorkflowSHA: releaseSHA, GithubWorkflowName: "release",
		GithubWorkflowRepository: "acme/app", GithubWorkflowRef: "refs/tags/v1.0.0",
	})
	// Another CI's certificate, with the repository in the SAN but no extension at all.
	bare := f.signed(t, "bare", subject("acme/app", "refs/tags/v1.2.0"), githubIssuer, certificate.Extensions{})
	otherIssuer := f.signed(t, "other-issuer", subject("acme/app", "refs/tags/v1.2.0"), "https://accounts.example.com",
		registrytest.GitHubExtensions("acme/app", workflowPath, "refs/tags/v1.2.0", "push", releaseSHA))

	acmeID := registrytest.GitHubExtensions("acme/app", workflowPath, "", "", "").SourceRepositoryIdentifier
	full := v1alpha1.GitHubWorkflow{Repository: "acme/app", Workflow: workflowPath, Ref: "refs/tags/v*", Trigger: "push", SHA: releaseSHA, RunnerEnvironment: "github-hosted"}
	id := func(g v1alpha1.GitHubWorkflow) v1alpha1.Identity {
		return v1alpha1.Identity{Issuer: githubIssuer, GitHubWorkflow: g}
	}
	for _, c := range []struct {
		name  string
		id    v1alpha1.Identity
		image name.Digest
		want  string // "" admitted
	}{
		{"every field matches, no subject needed", id(full), release, ""},
		{"with a subject too", v1alpha1.Identity{Issuer: githubIssuer, SubjectRegExp: `https://github\.com/acme/app/.*`, GitHubWorkflow: full}, release, ""},
		{"repository only", id(v1alpha1.GitHubWorkflow{Repository: "acme/app"}), release, ""},
		{"a fork", id(full), fork, `githubWorkflow.repository: the certificate says "evil/app", not "acme/app"`},
		{"a branch, not a tag", id(full), branch, `githubWorkflow.ref: the certificate says "refs/heads/main", which does not match "refs/tags/v*"`},
		{"a manual dispatch", id(full), dispatched, `githubWorkflow.trigger: the certificate says "workflow_dispatch", not "push"`},
		{"another workflow of the repository", id(full), otherWorkflow, `githubWorkflow.workflow: the certificate says ".github/workflows/nightly.yml", not ".github/workflows/release.yml"`},
		{"a self-hosted runner", id(full), onOwnRunner, `githubWorkflow.runnerEnvironment: the certificate says "self-hosted", not "github-hosted"`},
		{"another commit", id(v1alpha1.GitHubWorkflow{Repository: "acme/app", SHA: strings.Repeat("f", 40)}), release, `githubWorkflow.sha: the certificate says "` + releaseSHA + `", not "ffffffffffffffffffffffffffffffffffffffff"`},
		{"older extensions are read", id(v1alpha1.GitHubWorkflow{Repository: "acme/app", Ref: "refs/tags/v*", Trigger: "push", SHA: releaseSHA}), old, ""},
		{"older extensions name no workflow file", id(v1alpha1.GitHubWorkflow{Repository: "acme/app", Workflow: workflowPath}), old, `githubWorkflow.workflow: the certificate says nothing (the extension is absent), not ".github/workflows/release.yml"`},
		{"no extensions at all", id(v1alpha1.GitHubWorkflow{Repository: "acme/app"}), bare, `githubWorkflow.repository: the certificate says nothing (the extension is absent), not "acme/app"`},
		{"the issuer still counts", id(full), otherIssuer, `expected issuer value "https://token.actions.githubusercontent.com", got "https://accounts.example.com"`},
		{"the subject still counts", v1alpha1.Identity{Issuer: githubIssuer, Subject: "https://github.com/acme/app/.github/workflows/other.yml@refs/tags/v1.2.0", GitHubWorkflow: full}, release, `expected SAN value "https://github.com/acme/app/.github/workflows/other.yml@refs/tags/v1.2.0"`},
		{"exact extensions", v1alpha1.Identity{Issuer: githubIssuer, SubjectRegExp: ".*", Extensions: v1alpha1.CertificateExtensions{SourceRepositoryIdentifier: acmeID, BuildTrigger: "push"}}, release, ""},
		{"exact extensions differ", v1alpha1.Identity{Issuer: githubIssuer, SubjectRegExp: ".*", Extensions: v1alpha1.CertificateExtensions{SourceRepositoryIdentifier: acmeID}}, fork, `extensions.sourceRepositoryIdentifier: the certificate says "` + registrytest.GitHubExtensions("evil/app", workflowPath, "", "", "").SourceRepositoryIdentifier + `", not "` + acmeID + `"`},
		{"another repository identifier", v1alpha1.Identity{Issuer: githubIssuer, SubjectRegExp: ".*", Extensions: v1alpha1.CertificateExtensions{SourceRepositoryIdentifier: "999"}}, release, `extensions.sourceRepositoryIdentifier: the certificate says "` + acmeID + `", not "999"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := f.verdict(t, &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keyless("github-actions", c.id)}}, c.image)
			expectVerdict(t, got, c.want)
		})
	}

	t.Run("each identity's extensions are checked on a certificate that matched that identity", func(t *testing.T) {
		// The fork's certificate matches the first identity's subject; the second identity's
		// extensions would accept only acme/app. Neither alone accepts the fork.
		ids := []v1alpha1.Identity{
			{Issuer: githubIssuer, SubjectRegExp: `https://github\.com/evil/.*`, GitHubWorkflow: v1alpha1.GitHubWorkflow{Repository: "acme/app"}},
			{Issuer: githubIssuer, Subject: "https://github.com/nobody/x", GitHubWorkflow: v1alpha1.GitHubWorkflow{Repository: "evil/app"}},
		}
		if got := f.verdict(t, &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keyless("github-actions", ids...)}}, fork); !strings.Contains(got, "no signature by a trusted signer") {
			t.Errorf("admitted by mixing two identities: %q", got)
		}
		// A plain identity that does not match, then one with extensions that does.
		ids = []v1alpha1.Identity{{Issuer: githubIssuer, Subject: "https://github.com/nobody/x"}, id(full)}
		if got := f.verdict(t, &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keyless("github-actions", ids...)}}, release); got != "" {
			t.Errorf("refused: %s", got)
		}
	})

	t.Run("attestations are held to the same extensions", func(t *testing.T) {
		const provenance = "https://slsa.dev/provenance/v1"
		attested := func(repo string) name.Digest {
			d := mustPush(t, f.reg, "acme/app", "attested-"+strings.ReplaceAll(repo, "/", "-"))
			if err := f.ss.SignBundleWithExtensions(d, registrytest.Statement(d, ctypes.CosignSignPredicateType), subject("acme/app", "refs/tags/v1.2.0"), githubIssuer,
				registrytest.GitHubExtensions("acme/app", workflowPath, "refs/tags/v1.2.0", "push", releaseSHA)); err != nil {
				t.Fatal(err)
			}
			if err := f.ss.SignBundleWithExtensions(d, registrytest.AttestationStatement(d, provenance, []byte(`{}`)), subject(repo, "refs/tags/v1.2.0"), githubIssuer,
				registrytest.GitHubExtensions(repo, workflowPath, "refs/tags/v1.2.0", "push", releaseSHA)); err != nil {
				t.Fatal(err)
			}
			return d
		}
		rules := func() *v1alpha1.VerifyRules {
			return &v1alpha1.VerifyRules{
				Signers:      []v1alpha1.Signer{keyless("github-actions", id(v1alpha1.GitHubWorkflow{Repository: "acme/app"}))},
				Attestations: []v1alpha1.AttestationRule{{Name: "provenance", PredicateType: provenance}},
			}
		}
		if got := f.verdict(t, rules(), attested("acme/app")); got != "" {
			t.Errorf("refused: %s", got)
		}
		if got := f.verdict(t, rules(), attested("evil/app")); !strings.Contains(got, `githubWorkflow.repository: the certificate says "evil/app"`) {
			t.Errorf("an attestation signed from a fork: %q", got)
		}
	})
}

func TestKeylessIdentityErrors(t *testing.T) {
	f := newKeylessFixture(t)
	rules := &v1alpha1.VerifyRules{
		Signers:         []v1alpha1.Signer{keyless("g", v1alpha1.Identity{Issuer: githubIssuer, GitHubWorkflow: v1alpha1.GitHubWorkflow{Repository: "acme/app", Ref: "refs/tags/["}})},
		TransparencyLog: v1alpha1.TransparencyLogRequired, TrustedRoot: v1alpha1.ConfigMapKeyReference{Name: "sigstore"},
	}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("bad", rules)}, nil, policy.Options{Trust: verify.Compiler(f.src)})
	want := `signers[0] "g": identities[0]: githubWorkflow.ref "refs/tags/[" is not a valid glob`
	if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "bad"}); !strings.Contains(e, want) {
		t.Errorf("got %q, want it to say %q", e, want)
	}
}

func TestRequiredSigners(t *testing.T) {
	f := newKeylessFixture(t)
	release, _ := registrytest.NewKey()
	security, _ := registrytest.NewKey()
	ops, _ := registrytest.NewKey()
	keys := []v1alpha1.Signer{keySigner("release", release.PublicKeyPEM()), keySigner("security", security.PublicKeyPEM()), keySigner("ops", ops.PublicKeyPEM())}

	onlyRelease := mustPush(t, f.reg, "acme/keys", "only-release")
	if err := release.Sign(onlyRelease); err != nil {
		t.Fatal(err)
	}
	both := mustPush(t, f.reg, "acme/keys", "both")
	if err := release.SignLegacy(both, both); err != nil { // one in each format
		t.Fatal(err)
	}
	if err := security.Sign(both); err != nil {
		t.Fatal(err)
	}
	releaseTwice := mustPush(t, f.reg, "acme/keys", "release-twice")
	if err := release.Sign(releaseTwice); err != nil {
		t.Fatal(err)
	}
	if err := release.SignLegacy(releaseTwice, releaseTwice); err != nil {
		t.Fatal(err)
	}
	unsigned := mustPush(t, f.reg, "acme/keys", "unsigned")

	for _, c := range []struct {
		name     string
		required int32
		image    name.Digest
		want     string
	}{
		{"one of three by default", 0, onlyRelease, ""},
		{"two of three: one signed", 2, onlyRelease, `signatures by 2 different trusted signers are required, 1 verified: key "release" (missing: key "security", key "ops"; found 1 signature, none verified for the missing signers: `},
		{"two of three: two signed", 2, both, ""},
		{"two of three: one signer twice", 2, releaseTwice, `signatures by 2 different trusted signers are required, 1 verified: key "release" (missing: key "security", key "ops"; found 2 signatures`},
		{"three of three: two signed", 3, both, `signatures by 3 different trusted signers are required, 2 verified: key "release", key "security" (missing: key "ops"; found 2 signatures, none verified for the missing signers: `},
		{"none signed", 2, unsigned, `signatures by 2 different trusted signers are required, 0 verified (missing: key "release", key "security", key "ops"; found no signature`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := f.verdict(t, &v1alpha1.VerifyRules{Signers: keys, RequiredSigners: c.required, TransparencyLog: v1alpha1.TransparencyLogSkip}, c.image)
			expectVerdict(t, got, c.want)
		})
	}
	t.Run("two signers with one key are refused where both must sign", func(t *testing.T) {
		same := []v1alpha1.Signer{keySigner("release", release.PublicKeyPEM()), keySigner("security", release.PublicKeyPEM())}
		rules := &v1alpha1.VerifyRules{Signers: same, RequiredSigners: 2, TransparencyLog: v1alpha1.TransparencyLogSkip}
		snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("same", rules)}, nil, policy.Options{Trust: verify.Compiler(f.src)})
		want := `signers[1] "security" has the same public key as signers[0] "release": with requiredSigners 2, whoever holds that one key would sign as both`
		if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "same"}); !strings.Contains(e, want) {
			t.Errorf("got %q, want it to say %q", e, want)
		}
		rules.RequiredSigners = 0 // any one suffices: a duplicate is harmless
		snap = policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("same", rules)}, nil, policy.Options{Trust: verify.Compiler(f.src)})
		if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "same"}); e != "" {
			t.Errorf("with one signature required: %s", e)
		}
	})
	t.Run("one keyless signature matching two signers counts once; two do count twice in any order", func(t *testing.T) {
		acme := keyless("any-acme-workflow", v1alpha1.Identity{Issuer: githubIssuer, SubjectRegExp: `https://github\.com/acme/app/.*`})
		rel := keyless("release-workflow", v1alpha1.Identity{Issuer: githubIssuer, GitHubWorkflow: v1alpha1.GitHubWorkflow{Repository: "acme/app", Workflow: workflowPath}})
		rules := func() *v1alpha1.VerifyRules {
			return &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{acme, rel}, RequiredSigners: 2}
		}
		releaseSubject := "https://github.com/acme/app/" + workflowPath + "@refs/tags/v1"
		ciSubject := "https://github.com/acme/app/.github/workflows/ci.yml@refs/tags/v1"
		once := f.signed(t, "keyless-once", releaseSubject, githubIssuer, registrytest.GitHubExtensions("acme/app", workflowPath, "refs/tags/v1", "push", releaseSHA))
		if got := f.verdict(t, rules(), once); !strings.Contains(got, "1 verified") {
			t.Errorf("one signature counted for two signers: %q", got)
		}
		// The release workflow's signature matches both signers, the CI one only the first:
		// whichever the registry lists first, they are matched to different signers.
		for i, order := range [][2]string{{releaseSubject, ciSubject}, {ciSubject, releaseSubject}} {
			d := mustPush(t, f.reg, "acme/app", fmt.Sprintf("keyless-two-%d", i))
			for _, sub := range order {
				wf := workflowPath
				if sub == ciSubject {
					wf = ".github/workflows/ci.yml"
				}
				if err := f.ss.SignBundleWithExtensions(d, registrytest.Statement(d, ctypes.CosignSignPredicateType), sub, githubIssuer, registrytest.GitHubExtensions("acme/app", wf, "refs/tags/v1", "push", releaseSHA)); err != nil {
					t.Fatal(err)
				}
			}
			if got := f.verdict(t, rules(), d); got != "" {
				t.Errorf("signed by %v, refused: %s", order, got)
			}
		}
	})
}
