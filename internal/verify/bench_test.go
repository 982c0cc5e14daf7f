package verify_test

import (
	"context"
	"crypto"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/credentials"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/credentialtest"
	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// BenchmarkColdVerification is the first admission of a new image, signed in each format, on
// the loopback registry: a Verifier with empty caches resolves nothing (the image is pinned)
// and fetches and verifies the signatures. It reports the p50 and p99 of the iterations and
// the registry requests each made. A real registry adds its round trips to this.
func BenchmarkColdVerification(b *testing.B) {
	for _, format := range []string{"bundle", "legacy", "bundle+scan", "legacy+scan", "notation-jws", "notation-cose"} {
		b.Run(format, func(b *testing.B) {
			reg := registrytest.New(true)
			defer reg.Close()
			key, err := registrytest.NewKey()
			if err != nil {
				b.Fatal(err)
			}
			img, err := reg.Push("acme/app", "1")
			if err != nil {
				b.Fatal(err)
			}
			legacy := strings.HasPrefix(format, "legacy")
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
			switch {
			case strings.HasPrefix(format, "notation"):
				// notation sign with a certificate of a company CA, the envelope as a referrer.
				ca, cerr := notationtest.NewCA("Acme Release CA")
				if cerr != nil {
					b.Fatal(cerr)
				}
				s, cerr := ca.Issue("release", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
				if cerr != nil {
					b.Fatal(cerr)
				}
				mt := notationtest.JWS
				if format == "notation-cose" {
					mt = notationtest.COSE
				}
				err = s.Sign(img, notationtest.Options{MediaType: mt})
				rules = &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{notationSigner("release", ca, "x509.subject: "+notationtest.Subject("release"))}}
			case !legacy:
				err = key.Sign(img)
			default:
				err = key.SignLegacy(img, img)
			}
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasSuffix(format, "+scan") {
				// A Trivy scan with 200 findings (Low to High), as a signed attestation.
				st := registrytest.AttestationStatement(img, registrytest.CosignVuln, registrytest.TrivyPredicate(time.Now(), findings(200)...))
				if legacy {
					err = key.AttestLegacy(img, st)
				} else {
					err = key.Attest(img, st)
				}
				if err != nil {
					b.Fatal(err)
				}
				rules.Attestations = []v1alpha1.AttestationRule{{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln,
					Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, MaxAgeSeconds: int32((24 * time.Hour) / time.Second)}}}
			}
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
			sub := &policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img.String()}}}
			d := snap.Evaluate(sub)
			if len(d.Pending) != 1 {
				b.Fatalf("%d pending", len(d.Pending))
			}
			var took []time.Duration
			requests := reg.Requests()
			for b.Loop() {
				v := verify.New(verify.Options{})
				start := time.Now()
				failures := v.Outcomes(context.Background(), d.Pending)
				took = append(took, time.Since(start))
				v.Close()
				if failures[0].Reason != "" {
					b.Fatal(failures[0].Reason)
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(reg.Requests()-requests)/float64(b.N), "registry-requests/op")
		})
	}
}

func findings(n int) []registrytest.Vuln {
	severities := []string{"LOW", "MEDIUM", "HIGH"}
	out := make([]registrytest.Vuln, n)
	for i := range out {
		out[i] = registrytest.Vuln{ID: fmt.Sprintf("CVE-2026-%05d", i), Severity: severities[i%3]}
	}
	return out
}

// BenchmarkCachedVerification is every later admission of the same image: the verified result
// (signature and a 200-finding scan) answered from the cache.
func BenchmarkCachedVerification(b *testing.B) {
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	img, err := reg.Push("acme/app", "1")
	if err != nil {
		b.Fatal(err)
	}
	if err := key.Sign(img); err != nil {
		b.Fatal(err)
	}
	if err := key.Attest(img, registrytest.AttestationStatement(img, registrytest.CosignVuln, registrytest.TrivyPredicate(time.Now(), findings(200)...))); err != nil {
		b.Fatal(err)
	}
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip,
		Attestations: []v1alpha1.AttestationRule{{Name: "scan", PredicateType: v1alpha1.PredicateCosignVuln,
			Vulnerabilities: v1alpha1.VulnerabilityRules{MaxSeverity: v1alpha1.SeverityHigh, MaxAgeSeconds: int32((24 * time.Hour) / time.Second)}}}}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("scanned", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	d := snap.Evaluate(&policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img.String()}}})
	v := verify.New(verify.Options{})
	defer v.Close()
	ctx := context.Background()
	if f := v.Outcomes(ctx, d.Pending); f[0].Reason != "" {
		b.Fatal(f[0].Reason)
	}
	requests := reg.Requests()
	for b.Loop() {
		if f := v.Outcomes(ctx, d.Pending); f[0].Reason != "" {
			b.Fatal(f[0].Reason)
		}
	}
	if reg.Requests() != requests {
		b.Fatalf("%d registry requests with a warm cache", reg.Requests()-requests)
	}
}

// BenchmarkColdVerificationCredentials is a cold verification (empty caches) of a signed
// image in a registry that wants a password: from a pull secret, and from a kubelet image
// credential provider plugin run for it (a new process per verification: the provider's
// cache is empty too). It reports p50, p99 and registry requests per verification.
func BenchmarkColdVerificationCredentials(b *testing.B) {
	reg := registrytest.New(true)
	defer reg.Close()
	reg.RequireBasicAuth("AWS", "t0ken")
	creds := registrytest.Basic("AWS", "t0ken")
	key, err := registrytest.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	img, err := registrytest.PushTo(reg.Host, "acme/app", "1", creds)
	if err != nil {
		b.Fatal(err)
	}
	if err := key.Sign(img, creds); err != nil {
		b.Fatal(err)
	}
	dir := credentialtest.Plugin(b)
	config := credentialtest.Config(b, reg.Host, "AWS", "t0ken")
	secret := &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.Host + `":{"username":"AWS","password":"t0ken"}}}`)}}
	for _, via := range []string{"pull secret", "credential provider"} {
		b.Run(via, func(b *testing.B) {
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
			if via == "pull secret" {
				rules.PullSecrets = []v1alpha1.ObjectName{"registry"}
			}
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil,
				policy.Options{Trust: verify.Compiler(&sources{secrets: map[string]*corev1.Secret{"registry": secret}})})
			d := snap.Evaluate(&policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img.String()}}})
			var took []time.Duration
			requests := reg.Requests()
			for b.Loop() {
				var kc authn.Keychain
				if via == "credential provider" {
					providers, err := credentials.Load(config, dir)
					if err != nil {
						b.Fatal(err)
					}
					kc = providers
				}
				v := verify.New(verify.Options{Keychain: kc})
				start := time.Now()
				f := v.Outcomes(context.Background(), d.Pending)
				took = append(took, time.Since(start))
				v.Close()
				if f[0].Reason != "" {
					b.Fatal(f[0].Reason)
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(reg.Requests()-requests)/float64(b.N), "registry-requests/op")
		})
	}
}

// BenchmarkRemoteCacheMemory measures the manager's cache of KMS public keys with 1,000 keys
// fetched (ECDSA P-256, as cosign generates them in a KMS), and reports the heap it holds.
func BenchmarkRemoteCacheMemory(b *testing.B) {
	const n = 1000
	keys := make([]crypto.PublicKey, n)
	for i := range keys {
		k, err := registrytest.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k.Public()
	}
	var held float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := &verify.Remote{FetchKMS: func(_ context.Context, ref string) (crypto.PublicKey, error) {
			i, _ := strconv.Atoi(strings.TrimPrefix(ref, "hashivault://key-"))
			return keys[i], nil
		}}
		for i := range n {
			ref := fmt.Sprintf("hashivault://key-%d", i)
			for {
				if _, err := r.KMSKey(ref); err == nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = float64(after.HeapAlloc) - float64(before.HeapAlloc)
		runtime.KeepAlive(r)
	}
	b.ReportMetric(held/1024, "KiB-1000-keys")
	b.ReportMetric(held/n, "B/key")
}
