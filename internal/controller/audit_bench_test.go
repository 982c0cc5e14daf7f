package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podcache"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// BenchmarkAuditRunningImages is one audit of 1,000 running Pods whose images a verify rule
// with a vulnerability attestation covers, 10 distinct digests among them, with the verify
// cache warm (every run but the first each 10 minutes): it reports the cost per running image.
// Pods come from a fake client here, and every pass judges them all.
func BenchmarkAuditRunningImages(b *testing.B) {
	const pods, digests = 1000, 10
	reg := registrytest.New(true)
	defer reg.Close()
	key, err := registrytest.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	if err := imagegatev1alpha1.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	p := imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "scanned", UID: "u", Generation: 1}, Spec: imagegatev1alpha1.ImagePolicySpec{
		Verify: imagegatev1alpha1.VerifyRules{
			Signers:         []imagegatev1alpha1.Signer{{Name: "ci", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
			Attestations: []imagegatev1alpha1.AttestationRule{{Name: "scan", PredicateType: imagegatev1alpha1.PredicateCosignVuln,
				Vulnerabilities: imagegatev1alpha1.VulnerabilityRules{MaxSeverity: imagegatev1alpha1.SeverityHigh, MaxAgeSeconds: int32((24 * time.Hour) / time.Second)}}},
		},
	}}
	objs := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, p.DeepCopy()}
	var refs []string
	for i := range digests {
		d, err := reg.Push("acme/app", fmt.Sprint(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := key.Sign(d); err != nil {
			b.Fatal(err)
		}
		if err := key.Attest(d, registrytest.AttestationStatement(d, registrytest.CosignVuln, registrytest.TrivyPredicate(time.Now().Add(-time.Hour)))); err != nil {
			b.Fatal(err)
		}
		refs = append(refs, d.String())
	}
	for i := range pods {
		ref := refs[i%digests]
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("app-%d", i)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: ref}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ImageID: ref}}},
		})
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).WithStatusSubresource(&imagegatev1alpha1.ClusterImagePolicy{}).Build()
	// The same audit with a name rule instead of the verify rule is the baseline: the fake
	// client's copies dominate both, and the difference is what verifying running images adds.
	named := p
	named.Spec = imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{imagegatev1alpha1.ImagePattern(reg.Host + "/acme/**")}}}
	for _, c2 := range []struct {
		name   string
		policy imagegatev1alpha1.ClusterImagePolicy
	}{{"name-rule", named}, {"verify-rule", p}} {
		b.Run(c2.name, func(b *testing.B) {
			snap := policy.CompileWith([]imagegatev1alpha1.ClusterImagePolicy{c2.policy}, nil, policy.Options{Trust: verify.Compiler(noSources{})})
			a := &controller.Auditor{Client: c, Cache: c, Pods: podcache.Reader{Reader: c}, Interval: time.Hour, Verifier: verify.New(verify.Options{})}
			ctx := context.Background()
			start := time.Now()
			requests := reg.Requests()
			if err := a.Run(ctx, snap); err != nil {
				b.Fatal(err)
			}
			cold, coldRequests := time.Since(start), reg.Requests()-requests
			requests = reg.Requests()
			for b.Loop() {
				if err := a.Run(ctx, snap); err != nil {
					b.Fatal(err)
				}
			}
			if reg.Requests() != requests {
				b.Fatalf("%d registry requests with a warm cache", reg.Requests()-requests)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/pods, "ns/running-image")
			b.ReportMetric(float64(cold.Microseconds())/1000, "first-run-ms")
			b.ReportMetric(float64(coldRequests), "first-run-registry-requests")
		})
	}
}
