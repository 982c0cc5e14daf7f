package controller_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

type noSources struct{}

func (noSources) Secret(string) (*corev1.Secret, error)       { return nil, verify.ErrNotFound }
func (noSources) ConfigMap(string) (*corev1.ConfigMap, error) { return nil, verify.ErrNotFound }

var _ = Describe("Continuous verification of running images", func() {
	It("re-checks the digests running Pods run, and reports a scan that aged past maxAge", func() {
		reg := registrytest.New(true)
		DeferCleanup(reg.Close)
		key, err := registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		finished := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
		app, err := reg.Push("acme/app", "1.0")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(app)).To(Succeed())
		Expect(key.Attest(app, registrytest.AttestationStatement(app, registrytest.CosignVuln, registrytest.TrivyPredicate(finished)))).To(Succeed())
		other, err := reg.Push("acme/app", "1.1")
		Expect(err).NotTo(HaveOccurred())

		ns := newNamespace(nil)
		p := clusterPolicy(ns, "scanned", imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Signers:         []imagegatev1alpha1.Signer{{Name: "ci", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
			Attestations: []imagegatev1alpha1.AttestationRule{{Name: "scan", PredicateType: imagegatev1alpha1.PredicateCosignVuln,
				Vulnerabilities: imagegatev1alpha1.VulnerabilityRules{MaxSeverity: imagegatev1alpha1.SeverityHigh, MaxAgeSeconds: int32((time.Hour) / time.Second)}}},
		}})
		// The manager's reconciler compiles trust with the verifier's compiler; this suite's
		// has none, so the spec compiles the stored policy itself, as the reconciler would.
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		snap := policy.CompileWith([]imagegatev1alpha1.ClusterImagePolicy{*p}, nil, policy.Options{Trust: verify.Compiler(noSources{})})
		Expect(snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: p.Name})).To(BeEmpty())

		// Pods as the kubelet reports them: the spec names a tag (admitted before the policy),
		// or pins a digest; the status says which digest the runtime runs.
		running := func(name, image, imageID string) {
			GinkgoHelper()
			po := pod(ns, name, image)
			Expect(k8sClient.Create(ctx, po)).To(Succeed())
			po.Status.Phase = corev1.PodRunning
			po.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c0", Image: image, ImageID: imageID, Ready: true}}
			Expect(k8sClient.Status().Update(ctx, po)).To(Succeed())
			Eventually(func() string {
				if cached := cachedPod(ns, name); cached != nil {
					return cached.Images[0].Running
				}
				return ""
			}).WithTimeout(10 * time.Second).Should(Equal(podspec.RunningDigest(imageID)))
		}
		repo := reg.Host + "/acme/app"
		running("by-tag", repo+":1.0", "docker-pullable://"+app.String())
		running("pinned", repo+":1.0@"+app.DigestStr(), app.String())
		// Pinned to one digest, running another: the tag moved between admission and pull on a
		// node that resolved it itself, or the status lies; either way it is reported.
		running("moved", repo+":1.0@"+app.DigestStr(), repo+"@"+other.DigestStr())

		clk := &testClock{t: time.Now()}
		a := &controller.Auditor{Client: auditor.Client, Cache: auditor.Cache, Pods: auditor.Pods, Snapshots: snapshots, Interval: time.Hour,
			Metrics: auditor.Metrics, Verifier: verify.New(verify.Options{Now: clk.Now})}
		Expect(a.Run(ctx, snap)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.Status.Audit).NotTo(BeNil())
		Expect(p.Status.Audit.Samples).To(ConsistOf(imagegatev1alpha1.AuditSample{Namespace: ns, Pod: "moved", Container: "c0", Image: repo + ":1.0@" + app.DigestStr(), Rule: "verify"}))
		Expect(metricValue("imagegate_audit_running_images", map[string]string{"verdict": "verified"})).To(Equal(2.0))
		Expect(metricValue("imagegate_audit_earliest_scan_expiry_timestamp_seconds", nil)).To(Equal(float64(finished.Add(time.Hour).Unix())))

		// An hour and a minute after the scan: both Pods that run the scanned digest are
		// reported, with the reason, and no longer count as verified.
		clk.Set(finished.Add(time.Hour + time.Minute))
		Expect(a.Run(ctx, snap)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.Status.Audit.Violations).To(Equal(int32(3)))
		var pods []string
		for _, s := range p.Status.Audit.Samples {
			pods = append(pods, s.Pod+"/"+s.Rule)
		}
		Expect(pods).To(ConsistOf("by-tag/verify", "moved/verify", "pinned/verify"))
		Expect(metricValue("imagegate_audit_running_images", map[string]string{"verdict": "verified"})).To(Equal(0.0))
		Expect(metricValue("imagegate_audit_running_images", map[string]string{"verdict": "refused"})).To(Equal(2.0))

		// What the audit found is what admission says now: the same reason.
		d := snap.Evaluate(&policy.Subject{Namespace: ns, NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns}, Images: []policy.Image{{Field: "spec.containers[0].image", Ref: app.String(), Container: "c0"}}})
		failures := a.Verifier.Outcomes(ctx, d.Pending)
		Expect(failures).To(HaveLen(1))
		Expect(failures[0].Reason).To(ContainSubstring("is 1h1m old, older than maxAgeSeconds 3600 (1h)"))
		Expect(strings.Contains(failures[0].Reason, "trivy 0.58.1")).To(BeTrue())
	})

	It("verifies each namespace's running images though another's registry is silent", func() {
		key, err := registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		good := registrytest.New(true)
		DeferCleanup(good.Close)
		signed, err := good.Push("acme/app", "1")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(signed)).To(Succeed())
		silent := registrytest.New(true)
		DeferCleanup(silent.Close)
		label := map[string]string{"audit-fairness": rand.String(6)}
		noisy, quiet := newNamespace(label), newNamespace(label)
		for i := range 40 {
			d, err := silent.Push("slow/app", fmt.Sprint(i))
			Expect(err).NotTo(HaveOccurred())
			Expect(k8sClient.Create(ctx, pod(noisy, fmt.Sprint("p", i), d.String()))).To(Succeed())
		}
		silent.Fault(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		pushed := silent.Requests()
		Expect(k8sClient.Create(ctx, pod(quiet, "app", signed.String()))).To(Succeed())
		Eventually(func() int {
			n := 0
			for _, ns := range []string{noisy, quiet} {
				n += len(cachedPods(ns))
			}
			return n
		}).WithTimeout(10 * time.Second).Should(Equal(41))

		p := imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "fair-" + rand.String(6), UID: "uid-fair", Generation: 1}, Spec: imagegatev1alpha1.ImagePolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: label},
			Verify: imagegatev1alpha1.VerifyRules{
				Signers:         []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
				TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
			}}}
		snap := policy.CompileWith([]imagegatev1alpha1.ClusterImagePolicy{p}, nil, policy.Options{Trust: verify.Compiler(noSources{})})
		Expect(snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: p.Name})).To(BeEmpty())
		a := &controller.Auditor{Client: auditor.Client, Cache: auditor.Cache, Pods: auditor.Pods, Snapshots: snapshots, Interval: time.Hour,
			Metrics: auditor.Metrics, Verifier: verify.New(verify.Options{LookupTimeout: time.Second}), VerifyBudget: 3 * time.Second}
		Expect(a.Run(ctx, snap)).To(Succeed())
		// The quiet namespace's image verified; the silent registry's 40 were each tried at
		// most once (or refused by its circuit breaker) and reported as not verified.
		Expect(metricValue("imagegate_audit_running_images", map[string]string{"verdict": "verified"})).To(Equal(1.0))
		// Each of the 40 was refused (the registry's failure, or its open circuit) or, past the
		// pass's budget, not verified.
		Expect(metricValue("imagegate_audit_running_images", map[string]string{"verdict": "refused"}) +
			metricValue("imagegate_audit_running_images", map[string]string{"verdict": "unverified"})).To(Equal(40.0))
		GinkgoWriter.Printf("requests to the silent registry during the pass: %d\n", silent.Requests()-pushed)
		Expect(silent.Requests() - pushed).To(BeNumerically("<", 40))

		// A pass whose budget is gone before it starts reaches (almost) nothing: what it did
		// not reach is counted as not verified, not as refused.
		a.VerifyBudget = time.Nanosecond
		Expect(a.Run(ctx, snap)).To(Succeed())
		unverified := metricValue("imagegate_audit_running_images", map[string]string{"verdict": "unverified"})
		Expect(unverified).To(BeNumerically(">", 0))
		Expect(metricValue("imagegate_audit_running_images", map[string]string{"verdict": "refused"}) + unverified +
			metricValue("imagegate_audit_running_images", map[string]string{"verdict": "verified"})).To(Equal(41.0))
	})
})
