package verify_test

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// sources is imagegate's namespace in memory.
type sources struct {
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
}

func (s *sources) Secret(n string) (*corev1.Secret, error) {
	if x, ok := s.secrets[n]; ok {
		return x, nil
	}
	return nil, verify.ErrNotFound
}

func (s *sources) ConfigMap(n string) (*corev1.ConfigMap, error) {
	if x, ok := s.configMaps[n]; ok {
		return x, nil
	}
	return nil, verify.ErrNotFound
}

func keySigner(name, pem string) v1alpha1.Signer {
	return v1alpha1.Signer{Name: name, Key: v1alpha1.KeySigner{PublicKey: pem}}
}

func clusterPolicy(name string, rules *v1alpha1.VerifyRules) v1alpha1.ClusterImagePolicy {
	return v1alpha1.ClusterImagePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: "uid-" + "x", Generation: 1},
		Spec:       v1alpha1.ImagePolicySpec{Verify: *rules},
	}
}

// decide runs the engine and the verifier on one image, as the webhook does.
func decide(t *testing.T, snap *policy.Snapshot, v *verify.Verifier, image string) policy.Decision {
	t.Helper()
	sub := &policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: image, Container: "app"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return verify.Decide(ctx, snap, sub, v, verify.Steps{Verify: true}).Decision
}

func messages(d *policy.Decision) string {
	return strings.Join(d.Messages(v1alpha1.ModeEnforce), "\n")
}

func mustPush(t *testing.T, r *registrytest.Registry, repo, tag string) name.Digest {
	t.Helper()
	d, err := r.Push(repo, tag)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestKeySignatures(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "tag fallback"}[referrers], func(t *testing.T) {
			reg := registrytest.New(referrers)
			defer reg.Close()
			release, _ := registrytest.NewKey()
			other, _ := registrytest.NewKey()
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", release.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
			if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "signed"}); e != "" {
				t.Fatal(e)
			}
			v := verify.New(verify.Options{})

			legacy := mustPush(t, reg, "acme/legacy", "1")
			if err := release.SignLegacy(legacy, legacy); err != nil {
				t.Fatal(err)
			}
			bundle := mustPush(t, reg, "acme/bundle", "1")
			if err := release.Sign(bundle); err != nil {
				t.Fatal(err)
			}
			unsigned := mustPush(t, reg, "acme/unsigned", "1")
			byOther := mustPush(t, reg, "acme/other", "1")
			if err := other.SignLegacy(byOther, byOther); err != nil {
				t.Fatal(err)
			}
			otherBundle := mustPush(t, reg, "acme/otherbundle", "1")
			if err := other.Sign(otherBundle); err != nil {
				t.Fatal(err)
			}
			// A signature copied from another digest: the payload names the other image.
			copied := mustPush(t, reg, "acme/copied", "1")
			if err := release.SignLegacy(copied, legacy); err != nil {
				t.Fatal(err)
			}
			copiedBundle := mustPush(t, reg, "acme/copiedbundle", "1")
			if err := release.SignBundle(copiedBundle, registrytest.Statement(bundle, ctypes.CosignSignPredicateType)); err != nil {
				t.Fatal(err)
			}
			// A signed statement that is not a signature (an SBOM, a scan) of the same digest.
			attested := mustPush(t, reg, "acme/attested", "1")
			if err := release.SignBundle(attested, registrytest.Statement(attested, "https://slsa.dev/provenance/v1")); err != nil {
				t.Fatal(err)
			}

			for _, c := range []struct {
				image string
				want  string // "" admitted; else a part of the message
			}{
				{legacy.String(), ""},
				{bundle.String(), ""},
				{unsigned.String(), `no signature by a trusted signer (tried: key "release"; found no signature`},
				{byOther.String(), "found 1 signature, none verified"},
				{otherBundle.String(), "found 1 signature, none verified"},
				{copied.String(), "found 1 signature, none verified"},
				{copiedBundle.String(), "found 1 signature, none verified"},
			} {
				d := decide(t, snap, v, c.image)
				got := messages(&d)
				if c.want == "" && got != "" {
					t.Errorf("%s: refused, want admitted:\n%s", c.image, got)
				}
				if c.want != "" && !strings.Contains(got, c.want) {
					t.Errorf("%s: got %q, want it to say %q", c.image, got, c.want)
				}
			}
			// The attestation is listed as a referrer of another predicate: not a signature.
			if d := decide(t, snap, v, attested.String()); !strings.Contains(messages(&d), "found no signature") {
				t.Errorf("an attestation counted as a signature: %q", messages(&d))
			}
		})
	}
}

func TestKeylessBundles(t *testing.T) {
	f := newKeylessFixture(t)
	reg, ss, src := f.reg, f.ss, f.src
	const issuer = "https://token.actions.githubusercontent.com"
	const subject = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
	rules := func(id v1alpha1.Identity) *v1alpha1.VerifyRules {
		return &v1alpha1.VerifyRules{
			Signers:         []v1alpha1.Signer{{Name: "github-actions", Keyless: v1alpha1.KeylessSigner{Identities: []v1alpha1.Identity{id}}}},
			TransparencyLog: v1alpha1.TransparencyLogRequired,
			TrustedRoot:     v1alpha1.ConfigMapKeyReference{Name: "sigstore"},
		}
	}
	signed := mustPush(t, reg, "acme/app", "1")
	if err := ss.SignBundle(signed, registrytest.Statement(signed, ctypes.CosignSignPredicateType), subject, issuer); err != nil {
		t.Fatal(err)
	}
	forked := mustPush(t, reg, "acme/app", "2")
	if err := ss.SignBundle(forked, registrytest.Statement(forked, ctypes.CosignSignPredicateType), "https://github.com/evil-acme/app/.github/workflows/release.yml@refs/heads/main", issuer); err != nil {
		t.Fatal(err)
	}
	otherIssuer := mustPush(t, reg, "acme/app", "3")
	if err := ss.SignBundle(otherIssuer, registrytest.Statement(otherIssuer, ctypes.CosignSignPredicateType), subject, "https://accounts.example.com"); err != nil {
		t.Fatal(err)
	}
	expired := mustPush(t, reg, "acme/app", "4")
	if err := ss.SignBundleAt(expired, registrytest.Statement(expired, ctypes.CosignSignPredicateType), subject, issuer, time.Now().Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	v := verify.New(verify.Options{})
	for _, c := range []struct {
		name  string
		id    v1alpha1.Identity
		image name.Digest
		ok    bool
	}{
		{"exact identity", v1alpha1.Identity{Issuer: issuer, Subject: subject}, signed, true},
		{"regexp identity", v1alpha1.Identity{Issuer: issuer, SubjectRegExp: `https://github\.com/acme/.*`}, signed, true},
		{"another subject", v1alpha1.Identity{Issuer: issuer, Subject: subject}, forked, false},
		// Matched in full: "acme/" inside evil-acme must not match.
		{"regexp is anchored", v1alpha1.Identity{Issuer: issuer, SubjectRegExp: `https://github\.com/acme/.*`}, forked, false},
		{"another issuer", v1alpha1.Identity{Issuer: issuer, Subject: subject}, otherIssuer, false},
		{"certificate expired when logged", v1alpha1.Identity{Issuer: issuer, Subject: subject}, expired, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := clusterPolicy("keyless", rules(c.id))
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{p}, nil, policy.Options{Trust: verify.Compiler(src)})
			if e := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "keyless"}); e != "" {
				t.Fatal(e)
			}
			d := decide(t, snap, v, c.image.String())
			if got := messages(&d); (got == "") != c.ok {
				t.Errorf("admitted=%v, want %v: %s", got == "", c.ok, got)
			} else if !c.ok && !strings.Contains(got, `tried: keyless "github-actions"`) {
				t.Errorf("message does not say what was tried: %s", got)
			}
		})
	}
}

func TestTransparencyLogRequired(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	ss, _ := registrytest.NewSigstore()
	rootJSON, _ := ss.TrustedRootJSON()
	src := &sources{configMaps: map[string]*corev1.ConfigMap{"sigstore": {Data: map[string]string{"trusted_root.json": string(rootJSON)}}}}
	key, _ := registrytest.NewKey()
	img := mustPush(t, reg, "acme/app", "1")
	if err := key.SignLegacy(img, img); err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(img); err != nil {
		t.Fatal(err)
	}
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogRequired, TrustedRoot: v1alpha1.ConfigMapKeyReference{Name: "sigstore"}}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("tlog", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
	d := decide(t, snap, verify.New(verify.Options{}), img.String())
	if got := messages(&d); !strings.Contains(got, "found 2 signatures, none verified") {
		t.Errorf("signatures without a log entry were accepted, or the message is wrong: %q", got)
	}
}

func TestBrokenTrustIsInvalid(t *testing.T) {
	validKey, _ := registrytest.NewKey()
	src := &sources{
		secrets:    map[string]*corev1.Secret{"garbage": {Data: map[string][]byte{"cosign.pub": []byte("not a key")}}},
		configMaps: map[string]*corev1.ConfigMap{"badroot": {Data: map[string]string{"trusted_root.json": "{}"}}},
	}
	for _, c := range []struct {
		rules *v1alpha1.VerifyRules
		want  string
	}{
		{&v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("k", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")}, TransparencyLog: v1alpha1.TransparencyLogSkip}, `"k": the public key does not parse`},
		{&v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "k", Key: v1alpha1.KeySigner{SecretRef: v1alpha1.SecretKeyReference{Name: "missing"}}}}, TransparencyLog: v1alpha1.TransparencyLogSkip}, `Secret "missing": not found`},
		{&v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "k", Key: v1alpha1.KeySigner{SecretRef: v1alpha1.SecretKeyReference{Name: "garbage"}}}}, TransparencyLog: v1alpha1.TransparencyLogSkip}, "the public key does not parse"},
		{&v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "g", Keyless: v1alpha1.KeylessSigner{Identities: []v1alpha1.Identity{{Issuer: "i", Subject: "s"}}}}}, TrustedRoot: v1alpha1.ConfigMapKeyReference{Name: "badroot"}}, `ConfigMap "badroot" key "trusted_root.json" is not a valid trusted_root.json`},
		{&v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "g", Keyless: v1alpha1.KeylessSigner{Identities: []v1alpha1.Identity{{Issuer: "i", SubjectRegExp: "("}}}}}, TrustedRoot: v1alpha1.ConfigMapKeyReference{Name: "badroot"}}, "invalid regular expression"},
		{&v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("k", validKey.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip, PullSecrets: []v1alpha1.ObjectName{"nope"}}, `pullSecrets: Secret "nope": not found`},
	} {
		snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("broken", c.rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
		got := snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "broken"})
		if !strings.Contains(got, c.want) {
			t.Errorf("PolicyError = %q, want it to say %q", got, c.want)
		}
		// Fail closed: every image the policy covers is refused with the reason.
		d := snap.Evaluate(&policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: "ghcr.io/acme/app@sha256:" + strings.Repeat("a", 64)}}})
		if d.Allowed() {
			t.Errorf("a broken verify policy admitted a Pod (%s)", c.want)
		}
	}
}

func TestTagsArePinnedAndMovedTagsRefused(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, _ := registrytest.NewKey()
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	v := verify.New(verify.Options{})
	signed := mustPush(t, reg, "acme/app", "1.4")
	if err := key.Sign(signed); err != nil {
		t.Fatal(err)
	}
	tag := reg.Host + "/acme/app:1.4"
	d := decide(t, snap, v, tag)
	if len(d.Unpinned) != 1 || !strings.Contains(messages(&d), "it is not pinned by digest") {
		t.Fatalf("a tag under a verify rule was not refused as unpinned: %q %+v", messages(&d), d.Unpinned)
	}
	got, err := v.Resolve(context.Background(), &d.Unpinned[0])
	if err != nil || got != signed.DigestStr() {
		t.Fatalf("Resolve = %q, %v; want %s", got, err, signed.DigestStr())
	}
	if d := decide(t, snap, v, tag+"@"+got); messages(&d) != "" {
		t.Fatalf("the pinned image was refused: %s", messages(&d))
	}
	// The tag moves to other content after signing: its new digest is not signed.
	moved := mustPush(t, reg, "acme/app", "1.4")
	fresh := verify.New(verify.Options{}) // past the tag cache's lifetime
	got, err = fresh.Resolve(context.Background(), &d.Unpinned[0])
	if err != nil || got != moved.DigestStr() {
		t.Fatalf("Resolve after the move = %q, %v; want %s", got, err, moved.DigestStr())
	}
	if d := decide(t, snap, fresh, tag+"@"+got); !strings.Contains(messages(&d), "found no signature") {
		t.Fatalf("the moved tag's content was not refused: %q", messages(&d))
	}
}

func TestConcurrentAdmissionsShareOneLookup(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, _ := registrytest.NewKey()
	img := mustPush(t, reg, "acme/app", "1")
	if err := key.SignLegacy(img, img); err != nil {
		t.Fatal(err)
	}
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	v := verify.New(verify.Options{})
	before := reg.Count("GET signature manifest")
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if d := decide(t, snap, v, img.String()); messages(&d) != "" {
				t.Errorf("refused: %s", messages(&d))
			}
		})
	}
	wg.Wait()
	if n := reg.Count("GET signature manifest") - before; n != 1 {
		t.Errorf("100 concurrent admissions of one image fetched its signatures %d times, want 1", n)
	}
	if n := reg.Count("GET referrers"); n != 1 {
		t.Errorf("100 concurrent admissions listed its referrers %d times, want 1", n)
	}
}

func TestHostileRegistries(t *testing.T) {
	key, _ := registrytest.NewKey()
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	huge := strings.Repeat("x", 5<<20)
	baseline := runtime.NumGoroutine()
	defer func() {
		// Nothing a hostile registry did may leave goroutines behind: every request ended
		// with its deadline and the registries are closed.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > baseline+2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > baseline+2 {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines left behind (baseline %d):\n%s", n-baseline, baseline, buf[:runtime.Stack(buf, true)])
		}
	}()
	for _, c := range []struct {
		name  string
		fault http.HandlerFunc
		want  string
	}{
		{"5xx", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusBadGateway) }, "the registry 127.0.0.1"},
		{"401 loop", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			w.WriteHeader(http.StatusUnauthorized)
		}, "401 Unauthorized"},
		{"huge answers", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			_, _ = w.Write([]byte(huge))
		}, "the registry 127.0.0.1"},
		{"garbage manifests", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write([]byte("{not json"))
		}, "the registry 127.0.0.1"},
		{"hangs", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "deadline"},
		// Whatever a non-registry host answers stays out of the message, which the Pod's
		// creator reads: only the status is said.
		{"answers that are not a registry's", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "INTERNAL-SERVICE-DATA", http.StatusForbidden)
		}, "unexpected status 403 Forbidden"},
		{"redirects to a metadata address", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusTemporaryRedirect)
		}, "a redirect to a link-local address is refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reg := registrytest.New(true)
			defer reg.Close()
			img := mustPush(t, reg, "acme/app", "1")
			if err := key.SignLegacy(img, img); err != nil {
				t.Fatal(err)
			}
			reg.Fault(c.fault)
			// The deadline is what the hanging registry runs into; the others must be refused
			// for what they answered well before it, even on a loaded machine (-race).
			deadline := 10 * time.Second
			if c.want == "deadline" {
				deadline = 2 * time.Second
			}
			v := verify.New(verify.Options{LookupTimeout: deadline})
			defer v.Close()
			sub := &policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img.String()}}}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			d := verify.Decide(ctx, snap, sub, v, verify.Steps{Verify: true}).Decision
			if took := time.Since(start); took > deadline+time.Second {
				t.Errorf("the verification outlived its deadline: %v", took)
			}
			got := messages(&d)
			if d.Allowed() || !strings.Contains(got, c.want) {
				t.Errorf("got %q, want a refusal saying %q", got, c.want)
			}
			if strings.Contains(got, "INTERNAL-SERVICE-DATA") {
				t.Errorf("a response body reached the message: %s", got)
			}
			if len(got) > 2048 {
				t.Errorf("the message is %d bytes long", len(got))
			}
		})
	}
}

// Registry credentials come from kubernetes.io/dockerconfigjson Secrets named by the policy.
func TestPullSecrets(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	reg.RequireBasicAuth("ci", "s3cret")
	creds := registrytest.Basic("ci", "s3cret")
	key, _ := registrytest.NewKey()
	img, err := registrytest.PushTo(reg.Host, "acme/private", "1", creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(img, creds); err != nil {
		t.Fatal(err)
	}
	dockerConfig := func(user, pass string) *corev1.Secret {
		return &corev1.Secret{
			Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.Host + `":{"username":"` + user + `","password":"` + pass + `"}}}`)},
		}
	}
	src := &sources{secrets: map[string]*corev1.Secret{"right": dockerConfig("ci", "s3cret"), "wrong": dockerConfig("ci", "guess")}}
	for _, c := range []struct {
		secrets []v1alpha1.ObjectName
		want    string
	}{
		{[]v1alpha1.ObjectName{"right"}, ""},
		{[]v1alpha1.ObjectName{"wrong"}, "UNAUTHORIZED: authentication required"},
		{nil, "UNAUTHORIZED: authentication required"},
	} {
		rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip, PullSecrets: c.secrets}
		snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("private", rules)}, nil, policy.Options{Trust: verify.Compiler(src)})
		d := decide(t, snap, verify.New(verify.Options{}), img.String())
		got := messages(&d)
		if c.want == "" && got != "" {
			t.Errorf("secrets %v: refused: %s", c.secrets, got)
		}
		if c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("secrets %v: got %q, want %q", c.secrets, got, c.want)
		}
	}
}
