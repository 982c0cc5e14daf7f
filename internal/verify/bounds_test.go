package verify_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	rt "github.com/imagegate/imagegate/test/utils/registrytest"
)

// signedImage pushes acme/app:1 to a registry of its own and signs it with key.
func signedImage(t *testing.T, key *rt.Key) (*rt.Registry, name.Digest) {
	t.Helper()
	reg := rt.New(true)
	t.Cleanup(reg.Close)
	img := mustPush(t, reg, "acme/app", "1")
	if err := key.Sign(img); err != nil {
		t.Fatal(err)
	}
	return reg, img
}

// silentImages pushes n images to a registry of their own, which then answers nothing.
func silentImages(t *testing.T, n int) (*rt.Registry, []string) {
	t.Helper()
	reg := rt.New(true)
	t.Cleanup(reg.Close)
	var images []string
	for i := range n {
		images = append(images, mustPush(t, reg, "slow/app", fmt.Sprint(i)).String())
	}
	reg.Fault(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	return reg, images
}

// keyPolicy is a snapshot with one ClusterImagePolicy that requires a signature by key on
// every image.
func keyPolicy(t *testing.T, key *rt.Key) *policy.Snapshot {
	t.Helper()
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	return policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
}

// verifyIn verifies images as a request of namespace with a deadline in timeout, and returns
// each image's refusal ("" when verified).
func verifyIn(snap *policy.Snapshot, v *verify.Verifier, namespace string, timeout time.Duration, images ...string) []string {
	sub := &policy.Subject{Namespace: namespace}
	for i, img := range images {
		sub.Images = append(sub.Images, policy.Image{Field: fmt.Sprintf("spec.containers[%d].image", i), Ref: img})
	}
	d := snap.Evaluate(sub)
	ctx, cancel := context.WithTimeout(verify.WithNamespace(context.Background(), namespace), timeout)
	defer cancel()
	results := v.Outcomes(ctx, d.Pending)
	out := make([]string, len(results))
	for i, r := range results {
		out[i] = r.Reason
	}
	return out
}

// A sigstore bundle layer that is a gzip bomb (a few hundred kilobytes on the wire, half a
// gigabyte once inflated) is refused without being inflated, for signatures and for
// attestations alike: the verifier never decompresses what a registry serves.
func TestDecompressionBombIsRefusedUnread(t *testing.T) {
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 512 {
		_, _ = zw.Write(zeros)
	}
	_ = zw.Close()
	reg := rt.New(true)
	defer reg.Close()
	key, _ := rt.NewKey()
	img := mustPush(t, reg, "acme/app", "1")
	if err := rt.PushReferrer(img, rt.BundleMediaType, rt.BundleMediaType, bomb.Bytes(),
		map[string]string{ociremote.BundlePredicateType: ctypes.CosignSignPredicateType}); err != nil {
		t.Fatal(err)
	}
	v := verify.New(verify.Options{})
	defer v.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got := verifyIn(keyPolicy(t, key), v, "default", 10*time.Second, img.String())
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d KiB bomb (512 MiB inflated): %d MiB allocated by its verification; the test process's peak RSS %s",
		bomb.Len()>>10, allocated>>20, peakRSS())
	if !strings.Contains(got[0], "compressed (gzip or zstd), but its media type is JSON") {
		t.Errorf("got %q, want the bomb refused as compressed", got[0])
	}
	if allocated > 64<<20 {
		t.Errorf("verifying next to a bomb allocated %d MiB", allocated>>20)
	}
}

// Nothing unsigned chooses which scans are verified: an older clean scan, pushed again and
// again with a forged creation date, cannot push the newest (dirty) scan out of the
// candidates; and more candidates than the bound refuse rather than cut.
func TestOlderScansCannotOutrankNewerOnes(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	release, _ := rt.NewKey()
	ci, _ := rt.NewKey()
	rules := &v1alpha1.VerifyRules{
		Signers:         []v1alpha1.Signer{keySigner("release", release.PublicKeyPEM()), keySigner("ci", ci.PublicKeyPEM())},
		TransparencyLog: v1alpha1.TransparencyLogSkip,
		Attestations: []v1alpha1.AttestationRule{{
			Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln, Signers: []string{"ci"},
			Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, MaxAgeSeconds: 86400, Scanners: []string{"pkg:github/aquasecurity/trivy"}},
		}},
	}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("no-criticals", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	clk := &clock{t: scanned.Add(time.Hour)}
	img := mustPush(t, reg, "acme/app", "1")
	if err := release.Sign(img); err != nil {
		t.Fatal(err)
	}
	if err := ci.Attest(img, rt.AttestationStatement(img, rt.CosignVuln, rt.TrivyPredicate(scanned, rt.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"}))); err != nil {
		t.Fatal(err)
	}
	old, err := ci.BundleJSON(rt.AttestationStatement(img, rt.CosignVuln, rt.TrivyPredicate(scanned.Add(-3*time.Hour))))
	if err != nil {
		t.Fatal(err)
	}
	replay := func(n int) {
		for i := range n {
			// Each copy differs (its annotations) so that each is its own manifest.
			if err := rt.PushReferrer(img, rt.BundleMediaType, rt.BundleMediaType, old, map[string]string{
				ociremote.BundlePredicateType:      rt.CosignVuln,
				"org.opencontainers.image.created": fmt.Sprintf("2099-01-01T00:00:%02dZ", i%60),
				"copy":                             fmt.Sprint(n, "-", i),
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(want string) {
		t.Helper()
		v := verify.New(verify.Options{Now: clk.Now})
		defer v.Close()
		if got := verifyIn(snap, v, "default", 20*time.Second, img.String())[0]; !strings.Contains(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	replay(40)
	check("CVE-2026-1111 (Critical)")
	replay(30) // 71 scans: more than the bound
	check("the image has 71 sigstore bundles of predicate type https://cosign.sigstore.dev/attestation/vuln/v1 among its referrers, more than the 64 imagegate verifies")
}

// More signatures than the bound refuse the image, without fetching any of them.
func TestTooManySignaturesRefuse(t *testing.T) {
	reg := rt.New(true)
	defer reg.Close()
	key, _ := rt.NewKey()
	other, _ := rt.NewKey()
	img := mustPush(t, reg, "acme/app", "1")
	for range 65 {
		if err := other.Sign(img); err != nil {
			t.Fatal(err)
		}
	}
	before := reg.Count("GET manifest")
	got := verifyIn(keyPolicy(t, key), verify.New(verify.Options{}), "default", 10*time.Second, img.String())[0]
	if !strings.Contains(got, "has 65 sigstore bundles of predicate type "+ctypes.CosignSignPredicateType) || !strings.Contains(got, "more than the 64 imagegate verifies") {
		t.Errorf("got %q", got)
	}
	if n := reg.Count("GET manifest") - before; n > 1 {
		t.Errorf("%d manifests fetched for a refusal that needs none", n)
	}
}

// A request cannot make another namespace's image fail: a lookup runs on the verifier's own
// budget whatever the deadline of the request that started it, a request whose deadline has
// passed starts nothing, and a failure of the registry or the network is never cached.
func TestFailuresAreNotSharedAcrossRequests(t *testing.T) {
	key, _ := rt.NewKey()
	snap := keyPolicy(t, key)
	good, victim := signedImage(t, key)
	_, stalled := silentImages(t, 16)
	v := verify.New(verify.Options{LookupTimeout: 3 * time.Second})
	defer v.Close()

	// The attacker's request: 16 silent images, then the victim's, and a short deadline.
	got := verifyIn(snap, v, "attacker", 300*time.Millisecond, append(stalled, victim.String())...)
	for i, r := range got[:16] {
		if !strings.Contains(r, "deadline") {
			t.Errorf("stalled image %d: got %q", i, r)
		}
	}
	// The victim, right after, in another namespace.
	if r := verifyIn(snap, v, "victim", 5*time.Second, victim.String())[0]; r != "" {
		t.Errorf("the victim's signed image was refused after another namespace's request: %q", r)
	}

	// A registry error is not cached: once the registry is back, the next request passes.
	img := mustPush(t, good, "acme/flaky", "1")
	if err := key.Sign(img); err != nil {
		t.Fatal(err)
	}
	good.Fault(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	if r := verifyIn(snap, v, "victim", 5*time.Second, img.String())[0]; !strings.Contains(r, "503") {
		t.Errorf("got %q while the registry failed", r)
	}
	good.Fault(nil)
	if r := verifyIn(snap, v, "victim", 5*time.Second, img.String())[0]; r != "" {
		t.Errorf("a registry failure was cached: %q", r)
	}
}

// Failures are cached apart from passes: any requester can cause thousands of failures
// (unsigned digests), and they must not evict what others verified.
func TestFailuresDoNotEvictPasses(t *testing.T) {
	key, _ := rt.NewKey()
	snap := keyPolicy(t, key)
	reg := rt.New(true)
	defer reg.Close()
	signed := mustPush(t, reg, "acme/app", "signed")
	if err := key.Sign(signed); err != nil {
		t.Fatal(err)
	}
	var unsigned []string
	for i := range 40 {
		unsigned = append(unsigned, mustPush(t, reg, "acme/app", fmt.Sprint("u", i)).String())
	}
	v := verify.New(verify.Options{CacheEntries: 8})
	defer v.Close()
	if r := verifyIn(snap, v, "a", 5*time.Second, signed.String())[0]; r != "" {
		t.Fatal(r)
	}
	for _, u := range unsigned {
		if r := verifyIn(snap, v, "b", 5*time.Second, u)[0]; !strings.Contains(r, "found no signature") {
			t.Fatalf("%s: %q", u, r)
		}
	}
	before := reg.Requests()
	if r := verifyIn(snap, v, "a", 5*time.Second, signed.String())[0]; r != "" {
		t.Fatal(r)
	}
	if n := reg.Requests() - before; n != 0 {
		t.Errorf("the cached pass was evicted by 40 failures: %d registry requests to verify it again", n)
	}
}

// One namespace's lookups take at most their share of the slots: another namespace's image
// is verified while the first waits on a silent registry.
func TestNamespaceQuota(t *testing.T) {
	key, _ := rt.NewKey()
	snap := keyPolicy(t, key)
	_, signed := signedImage(t, key)
	_, stalled := silentImages(t, 3)
	v := verify.NewWithLimits(verify.Options{LookupTimeout: 2 * time.Second}, 3, 2)
	defer v.Close()
	var wg sync.WaitGroup
	for _, img := range stalled[:2] {
		wg.Go(func() { verifyIn(snap, v, "noisy", 3*time.Second, img) })
	}
	for deadline := time.Now().Add(time.Second); verify.Lookups(v, "noisy") < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if r := verifyIn(snap, v, "noisy", 300*time.Millisecond, stalled[2])[0]; !strings.Contains(r, `the registry lookups of namespace "noisy" are at their limit of 2 at once`) {
		t.Errorf("a third lookup of the noisy namespace: %q", r)
	}
	if r := verifyIn(snap, v, "quiet", 2*time.Second, signed.String())[0]; r != "" {
		t.Errorf("another namespace's image: %q", r)
	}
	wg.Wait()
}

// A registry that keeps failing is not contacted for a while: lookups for it fail at once.
func TestCircuitBreaker(t *testing.T) {
	key, _ := rt.NewKey()
	snap := keyPolicy(t, key)
	reg := rt.New(true)
	defer reg.Close()
	var images []name.Digest
	for i := range 6 {
		images = append(images, mustPush(t, reg, "acme/app", fmt.Sprint(i)))
	}
	reg.Fault(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	v := verify.New(verify.Options{})
	defer v.Close()
	for _, img := range images[:5] {
		if r := verifyIn(snap, v, "a", 5*time.Second, img.String())[0]; !strings.Contains(r, "502") {
			t.Fatalf("got %q", r)
		}
	}
	before := reg.Requests()
	r := verifyIn(snap, v, "a", 5*time.Second, images[5].String())[0]
	if !strings.Contains(r, "failed 5 times in a row, so imagegate does not contact it until") {
		t.Errorf("got %q", r)
	}
	if n := reg.Requests() - before; n != 0 {
		t.Errorf("%d requests to a registry whose circuit is open", n)
	}
}

// peakRSS is the process's peak resident set (VmHWM), where /proc says it.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
