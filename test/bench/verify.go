package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// Signature verification through the apiserver. An OCI registry runs in this process on
// loopback; its images are signed with one key the way `cosign sign --key` did before
// bundles (the sha256-<hex>.sig tag), which imagegate and Kyverno both read. imagegate's
// ClusterImagePolicy and Kyverno's verifyImages rule name the same key, the same
// registry and the same images.

// signedLabel marks the namespaces whose Pods run the registry's signed images: the name
// rules of the other layers leave them alone, and the verify rules cover them.
const signedLabel = "imagegate.io/bench-signed"

// signing is the registry, the key, and a CA whose certificate signs with Notation.
type signing struct {
	reg *registrytest.Registry
	key *registrytest.Key
	ca  *notationtest.CA
	// notary signs as `notation sign` does, with a certificate the CA issued.
	notary *notationtest.Signer
	n      int
}

func (e *benchEnv) signing() (*signing, error) {
	if e.sign != nil {
		return e.sign, nil
	}
	reg, err := registrytest.Listen("127.0.0.1:0", true)
	if err != nil {
		return nil, err
	}
	key, err := registrytest.NewKey()
	if err != nil {
		reg.Close()
		return nil, err
	}
	ca, err := notationtest.NewCA("Bench Release CA")
	if err != nil {
		reg.Close()
		return nil, err
	}
	notary, err := ca.Issue("release", time.Now().Add(-time.Hour), time.Now().Add(30*24*time.Hour))
	if err != nil {
		reg.Close()
		return nil, err
	}
	e.sign = &signing{reg: reg, key: key, ca: ca, notary: notary}
	return e.sign, nil
}

// signed pushes a new image to repo and signs it: with Notation (a JWS envelope as a
// referrer) when repo ends in -notation, else with the key in cosign's .sig tag.
func (s *signing) signed(repo string) (string, error) {
	d, err := s.push(repo)
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(repo, "-notation") {
		return d.String(), s.notary.Sign(d, notationtest.Options{})
	}
	return d.String(), s.key.SignLegacy(d, d)
}

// block indents PEM for a YAML block scalar.
func block(pem string, indent int) string {
	pad := strings.Repeat(" ", indent)
	return pad + strings.ReplaceAll(strings.TrimSpace(pem), "\n", "\n"+pad)
}

// imagegatePolicy covers the namespaces whose Pods run key-signed images (signedLabel
// interleaved or imagegate): the registry's images must carry the key's signature (cosign's
// .sig tag, no transparency log).
func (s *signing) imagegatePolicy() string {
	return s.imagegateRule("[interleaved, imagegate]", "    transparencyLog: Skip\n", "      key:\n        publicKey: |\n"+block(s.key.PublicKeyPEM(), 10))
}

// imagegateNotationPolicy is imagegatePolicy with a notation signer trusting the CA for any
// certificate it issued, as Kyverno's Notary attestor does, for the namespace whose Pods run
// Notation-signed images only: the Pods the interleaved layer stored run key-signed images,
// and the audit would re-verify each of them under this rule during the measurement.
func (s *signing) imagegateNotationPolicy() string {
	return s.imagegateRule("[imagegate-notation]", "", "      notation:\n        trustStores:\n        - type: ca\n          name: bench\n          certificates: |\n"+
		block(s.ca.PEM(), 12)+"\n        trustedIdentities: [\"*\"]")
}

// imagegateRule is the ClusterImagePolicy bench-verify with one signer named release, for
// the namespaces whose signedLabel is one of values (a YAML list).
func (s *signing) imagegateRule(values, extra, signer string) string {
	return fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: bench-verify
spec:
  namespaceSelector:
    matchExpressions: [{key: %s, operator: In, values: %s}]
  verify:
    images: ["%s/acme/**"]
%s    signers:
    - name: release
%s
`, signedLabel, values, s.reg.Host, extra, signer)
}

// kyvernoPolicy is the same rule as Kyverno's verifyImages, in namespaces labelled
// signedLabel=kyverno. The images are pinned by digest, so nothing is mutated.
func (s *signing) kyvernoPolicy() string {
	return s.kyvernoRule("kyverno", "", "        - keys:\n            publicKeys: |\n"+block(s.key.PublicKeyPEM(), 14)+
		"\n            rekor: {ignoreTlog: true}\n            ctlog: {ignoreSCT: true}")
}

// kyvernoNotationPolicy is Kyverno's verifyImages with its Notary attestor (a trust store of
// the CA's certificate, any identity, level strict), in namespaces labelled
// signedLabel=kyverno-notation.
func (s *signing) kyvernoNotationPolicy() string {
	return s.kyvernoRule("kyverno-notation", "      type: Notary\n", "        - certificates:\n            cert: |\n"+block(s.ca.PEM(), 14))
}

// kyvernoRule is the ClusterPolicy bench-verify for namespaces labelled signedLabel=label,
// with one attestor entry.
func (s *signing) kyvernoRule(label, verifyType, entry string) string {
	return fmt.Sprintf(`apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: bench-verify
spec:
  background: false
  webhookTimeoutSeconds: 15
  rules:
  - name: signed
    match:
      any:
      - resources:
          kinds: ["Pod"]
          namespaceSelector:
            matchLabels:
              %s: %s
    verifyImages:
    - imageReferences: ["%s/acme/*"]
%s      failureAction: Enforce
      mutateDigest: false
      verifyDigest: true
      required: true
      attestors:
      - entries:
%s
`, signedLabel, label, s.reg.Host, verifyType, entry)
}

// push pushes a new image to repo, unsigned.
func (s *signing) push(repo string) (name.Digest, error) {
	s.n++
	return registrytest.PushTo(s.reg.Host, "acme/"+repo, fmt.Sprintf("v%d", s.n), registrytest.Anonymous)
}

// setupImagegateVerify is setupImagegateScoped with the verify rule of imagegatePolicy.
func setupImagegateVerify(ctx context.Context, e *benchEnv, s *signing, scope imagegateScope) (func() error, error) {
	teardown, err := setupImagegateScoped(ctx, e, scope)
	if err != nil {
		return teardown, err
	}
	return teardown, e.kubectl([]byte(s.imagegatePolicy()), "apply", "-f", "-")
}

// probeSigned waits until ns admits a Pod running good and refuses one running an
// unsigned image of the same registry.
func (e *benchEnv) probeSigned(ctx context.Context, ns string, good ...string) error {
	s, err := e.signing()
	if err != nil {
		return err
	}
	unsigned, err := s.push("unsigned")
	if err != nil {
		return err
	}
	pods := e.clientset.CoreV1().Pods(ns)
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	return retry(ctx, 3*time.Minute, func() error {
		if _, err := pods.Create(ctx, benchPod("probe-signed", good...), dry); err != nil {
			return fmt.Errorf("the signed image was refused: %w", err)
		}
		if _, err := pods.Create(ctx, benchPod("probe-unsigned", unsigned.String()), dry); err == nil {
			return errors.New("an unsigned image was admitted")
		}
		return nil
	})
}

// verifyResult is one configuration of the verify layer.
type verifyResult struct {
	Config string
	// Cold: each create runs a Pod with an image signed just before, never seen.
	Cold stats
	// RegistryRequests is what the registry served per cold create.
	RegistryRequests float64
	// Warm: the same verified image again, one at a time and at -pod-concurrency.
	Warm, WarmConcurrent stats
	// WarmRegistryRequests is what the registry served during both warm runs.
	WarmRegistryRequests int64
	Skipped              string
}

type verifyReport struct {
	ColdPods, WarmPods, Concurrency int
	Results                         []verifyResult
}

// result is the configuration whose name starts with prefix, or nil.
func (v *verifyReport) result(prefix string) *verifyResult {
	for i := range v.Results {
		if strings.HasPrefix(v.Results[i].Config, prefix) {
			return &v.Results[i]
		}
	}
	return nil
}

// verifyMeasures are the verify layer's streams, for the targets.
var verifyMeasures = []struct {
	name string
	pick func(*verifyResult) stats
}{
	{"cold, one at a time", func(r *verifyResult) stats { return r.Cold }},
	{"warm, one at a time", func(r *verifyResult) stats { return r.Warm }},
	{"warm, 8 at a time", func(r *verifyResult) stats { return r.WarmConcurrent }},
}

const (
	verifyColdPods = 30
	verifyWarmPods = 150
)

// verifyLayer measures cold and warm verification: no webhook, imagegate as shipped and
// Kyverno's verifyImages, one after another (Kyverno cannot be scoped to a namespace the
// way the interleaved layer needs).
func (e *benchEnv) verifyLayer(ctx context.Context) error {
	s, err := e.signing()
	if err != nil {
		return err
	}
	progress("layer 5: signature verification through the apiserver (registry %s)", s.reg.Host)
	configs := []struct {
		key, name string
		setup     func(ctx context.Context) (func() error, error)
	}{
		{"none", "no admission webhook", func(context.Context) (func() error, error) { return nil, nil }},
		{"imagegate", "imagegate", func(ctx context.Context) (func() error, error) {
			e.selector = map[string]string{signedLabel: "imagegate"}
			defer func() { e.selector = nil }()
			return setupImagegateVerify(ctx, e, s, imagegateScope{startManager: true, suffix: "-verify"})
		}},
		{"kyverno", "Kyverno " + peerVersion(e.o.root, "kyverno") + " verifyImages", func(ctx context.Context) (func() error, error) {
			return startKyverno(ctx, e, "bench-verify", s.kyvernoPolicy(), "--allowInsecureRegistry=true")
		}},
		{"imagegate-notation", "imagegate, Notation signature", func(ctx context.Context) (func() error, error) {
			e.selector = map[string]string{signedLabel: "imagegate-notation"}
			defer func() { e.selector = nil }()
			teardown, err := setupImagegateScoped(ctx, e, imagegateScope{startManager: true, suffix: "-verify-notation"})
			if err != nil {
				return teardown, err
			}
			return teardown, e.kubectl([]byte(s.imagegateNotationPolicy()), "apply", "-f", "-")
		}},
		{"kyverno-notation", "Kyverno " + peerVersion(e.o.root, "kyverno") + " verifyImages, Notary attestor", func(ctx context.Context) (func() error, error) {
			return startKyverno(ctx, e, "bench-verify", s.kyvernoNotationPolicy(), "--allowInsecureRegistry=true")
		}},
	}
	rep := &verifyReport{ColdPods: verifyColdPods, WarmPods: verifyWarmPods, Concurrency: e.o.podConcurrency}
	for _, c := range configs {
		res := verifyResult{Config: c.name}
		var err error
		if res.Skipped, err = skipped(ctx, "verify", c.name, e.measureVerify(ctx, s, c.key, c.setup, &res)); err != nil {
			return err
		}
		rep.Results = append(rep.Results, res)
	}
	e.rep.Verify = rep
	return nil
}

func (e *benchEnv) measureVerify(ctx context.Context, s *signing, key string, setup func(context.Context) (func() error, error), res *verifyResult) error {
	ns := "verify-" + key
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{signedLabel: key}}}
	if _, err := e.clientset.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
		return err
	}
	warm, err := s.signed(key)
	if err != nil {
		return err
	}
	cold := make([]string, verifyColdPods)
	for i := range cold {
		if cold[i], err = s.signed(key); err != nil {
			return err
		}
	}
	teardown, err := setup(ctx)
	if teardown != nil {
		defer func() {
			if err := teardown(); err != nil {
				progress("verify: tearing down %s: %v", res.Config, err)
			}
		}()
	}
	if err != nil {
		return err
	}
	if key != "none" {
		// Also verifies warm, so the warm runs below start with it cached.
		if err := e.probeSigned(ctx, ns, warm); err != nil {
			return err
		}
	}
	time.Sleep(settle)
	pods := e.clientset.CoreV1().Pods(ns)
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	before := s.reg.Requests()
	res.Cold = run(ctx, len(cold), 1, 3*time.Minute, func(ctx context.Context, i int) error {
		_, err := pods.Create(ctx, benchPod(fmt.Sprintf("cold-%d", i), cold[i]), dry)
		return err
	})
	res.RegistryRequests = float64(s.reg.Requests()-before) / float64(len(cold))
	before = s.reg.Requests()
	res.Warm = run(ctx, verifyWarmPods, 1, 3*time.Minute, func(ctx context.Context, i int) error {
		_, err := pods.Create(ctx, benchPod(fmt.Sprintf("warm-%d", i), warm), dry)
		return err
	})
	res.WarmConcurrent = run(ctx, verifyWarmPods, e.o.podConcurrency, 3*time.Minute, func(ctx context.Context, i int) error {
		_, err := pods.Create(ctx, benchPod(fmt.Sprintf("warm-c-%d", i), warm), dry)
		return err
	})
	res.WarmRegistryRequests = s.reg.Requests() - before
	for _, st := range []stats{res.Cold, res.Warm, res.WarmConcurrent} {
		if st.Errors > 0 {
			return fmt.Errorf("%d of %d creates failed, first: %s", st.Errors, st.Requests, st.FirstError)
		}
	}
	progress("verify: %-40s cold p50 %.2f ms (%.1f registry requests each), warm p50 %.2f ms, warm %d at a time p50 %.2f ms (%d registry requests in all)",
		res.Config, ms(res.Cold.P50), res.RegistryRequests, ms(res.Warm.P50), e.o.podConcurrency, ms(res.WarmConcurrent.P50), res.WarmRegistryRequests)
	return nil
}

func (r *report) writeVerify(w func(string, ...any)) {
	v := r.Verify
	if v == nil {
		return
	}
	w("## 5. Signature verification through the kube-apiserver, cold and warm\n\n")
	w("An OCI registry runs in the harness on loopback (go-containerregistry's, with the OCI 1.1\n")
	w("referrers API). Each image is signed with one ECDSA P-256 key as `cosign sign --key` stores\n")
	w("it without bundles (the `sha256-<hex>.sig` tag, no transparency log), which imagegate and\n")
	w("Kyverno both read. imagegate's ClusterImagePolicy (`verify.signers[].key.publicKey`,\n")
	w("`transparencyLog: Skip`) and Kyverno's verifyImages rule (`attestors[].entries[].keys`,\n")
	w("`rekor.ignoreTlog`, `ctlog.ignoreSCT`, `mutateDigest: false`, `verifyDigest: true`; Kyverno\n")
	w("started with `--allowInsecureRegistry` for the plain-HTTP registry) name the same key and the\n")
	w("same images, and each is first proven in force (a signed image admitted, an unsigned one of\n")
	w("the same registry refused). Pods run one container, pinned by digest. Cold: %d Pods, each\n", v.ColdPods)
	w("with an image signed just before and never seen, one at a time. Warm: %d Pods with an image\n", v.WarmPods)
	w("already verified, one at a time and %d at a time. All are dry-run creates. imagegate\n", v.Concurrency)
	w("is `config/local` as shipped (both webhooks), scoped to its namespace; Kyverno runs with the\n")
	w("defaults of its chart (its verification cache on, 60 minutes). The Notation rows sign each\n")
	w("image instead with `notation sign`'s format (a JWS envelope as an OCI referrer, by a\n")
	w("certificate of a CA generated for the run): imagegate's `notation` signer and Kyverno's\n")
	w("`type: Notary` attestor both trust that CA's certificate for any identity, at level strict.\n\n")
	w("| Configuration | cold p50 | cold p99 | registry requests per cold Pod | warm p50 | warm p99 | warm, %d at a time: p50 | p99 | registry requests, all %d warm Pods |\n", v.Concurrency, 2*v.WarmPods)
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range v.Results {
		if res.Skipped != "" {
			w("| %s | could not run here: %s | | | | | | | |\n", res.Config, res.Skipped)
			continue
		}
		w("| %s | %.2f ms | %.2f ms | %.1f | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %d |\n", res.Config,
			ms(res.Cold.P50), ms(res.Cold.P99), res.RegistryRequests, ms(res.Warm.P50), ms(res.Warm.P99), ms(res.WarmConcurrent.P50), ms(res.WarmConcurrent.P99), res.WarmRegistryRequests)
	}
	w("\n")
}
