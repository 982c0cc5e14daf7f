package controller_test

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

var _ = Describe("Background audit", func() {
	It("counts the running Pods that break each policy, with a deterministic sample", func() {
		ns := newNamespace(nil)
		// Pods admitted before the policy exists.
		for _, name := range []string{"c", "a", "b"} {
			Expect(createErr(pod(ns, name, "quay.io/legacy/"+name+":1", "ghcr.io/acme/ok:1"))).To(BeEmpty())
		}
		Expect(createErr(pod(ns, "fine", "ghcr.io/acme/app:1"))).To(BeEmpty())
		done := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c"}, done)).To(Succeed())
		done.Status.Phase = corev1.PodSucceeded
		Expect(k8sClient.Status().Update(ctx, done)).To(Succeed())

		spec := allowAcme
		spec.Mode = imagegatev1alpha1.ModeAudit
		p := clusterPolicy(ns, "audit", spec)
		// The cache must have seen the Pods and the status change before the run.
		Eventually(func() bool {
			c := cachedPod(ns, "c")
			return c != nil && c.Finished
		}).WithTimeout(10 * time.Second).Should(BeTrue())
		Expect(auditor.Run(ctx, snapshots.Snapshot())).To(Succeed())

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.Status.Audit).NotTo(BeNil())
		Expect(p.Status.Audit.Violations).To(Equal(int32(2)), "a and b; c has completed")
		Expect(p.Status.Audit.Samples).To(Equal([]imagegatev1alpha1.AuditSample{
			{Namespace: ns, Pod: "a", Container: "c0", Image: "quay.io/legacy/a:1", Rule: "images.allow"},
			{Namespace: ns, Pod: "b", Container: "c0", Image: "quay.io/legacy/b:1", Rule: "images.allow"},
		}))
		Expect(p.Status.Audit.LastScanTime.Time).To(BeTemporally("~", time.Now(), time.Minute))
		// The audit leaves the Ready condition alone.
		Expect(p.Status.Conditions).NotTo(BeEmpty())
		Expect(metricValue("imagegate_audit_violating_pods", map[string]string{"policy": "ClusterImagePolicy/" + p.Name})).To(Equal(2.0))
	})
})

var _ = Describe("A replica that is not the leader", func() {
	It("compiles the snapshot too, so it can serve the webhook", func() {
		// Someone else holds the lease for the next hour.
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "imagegate-follower-test", Namespace: "default"},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To("another-replica"), LeaseDurationSeconds: ptr.To[int32](3600),
				AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()},
			},
		}
		Expect(k8sClient.Create(ctx, lease)).To(Succeed())
		follower, err := ctrl.NewManager(testEnv.Config, ctrl.Options{
			Scheme: k8sClient.Scheme(), LeaderElection: true, LeaderElectionID: lease.Name, LeaderElectionNamespace: "default",
			Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
			// A second manager in this process: its controller's name is taken.
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		r := policy.NewStore()
		Expect(controller.NewPolicyReconciler(follower.GetClient(), r, controller.ReconcilerOptions{}).SetupWithManager(follower)).To(Succeed())
		fctx, stop := context.WithCancel(ctx)
		DeferCleanup(stop)
		go func() {
			defer GinkgoRecover()
			Expect(follower.Start(fctx)).To(Succeed())
		}()
		Eventually(r.Snapshot).WithTimeout(20 * time.Second).ShouldNot(BeNil())
		Consistently(follower.Elected()).WithTimeout(time.Second).ShouldNot(BeClosed())

		ns := newNamespace(nil)
		clusterPolicy(ns, "follower", allowAcme)
		Eventually(func() bool {
			for _, ref := range r.Snapshot().Refs() {
				if ref.Name == ns+"-follower" {
					return true
				}
			}
			return false
		}).WithTimeout(10 * time.Second).Should(BeTrue())
	})
})

var _ = Describe("Background audit of hostile images", func() {
	It("writes a sample that fits the status schema however long the image", func() {
		ns := newNamespace(nil)
		long := "ghcr.io/evil/" + strings.Repeat("a", 2000) + ":1"
		Expect(createErr(pod(ns, "long", long))).To(BeEmpty())
		p := clusterPolicy(ns, "audit-long", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeAudit, Images: allowAcme.Images})
		Eventually(func() *podspec.Running { return cachedPod(ns, "long") }).WithTimeout(10 * time.Second).ShouldNot(BeNil())
		Expect(auditor.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.Status.Audit).NotTo(BeNil())
		Expect(p.Status.Audit.Samples).To(HaveLen(1))
		Expect(p.Status.Audit.Samples[0].Image).To(Equal(long[:imagegatev1alpha1.AuditSampleMaxImage-3]+"..."), "cut to the schema's maxLength, and marked")
	})
})

var _ = Describe("Background audit after a Namespace is relabelled", func() {
	It("reports the Pods already running in a namespace relabelled into a namespaceSelector, without a policy change", func() {
		ns := newNamespace(nil)
		Expect(createErr(pod(ns, "legacy", "quay.io/legacy/app:1"))).To(BeEmpty())
		p := clusterPolicy(ns, "prod-only", imagegatev1alpha1.ImagePolicySpec{
			Mode:              imagegatev1alpha1.ModeAudit,
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env-" + ns: "prod"}},
			Images:            allowAcme.Images,
		})
		running := &controller.Auditor{Client: k8sClient, Cache: auditor.Cache, Pods: auditor.Pods, Snapshots: snapshots, Interval: time.Hour, Metrics: auditor.Metrics}
		ns0 := &metav1.PartialObjectMetadata{}
		ns0.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		informer, err := auditorCache.GetInformer(ctx, ns0)
		Expect(err).NotTo(HaveOccurred())
		Expect(running.WatchNamespaces(informer)).To(Succeed())
		actx, stop := context.WithCancel(ctx)
		DeferCleanup(stop)
		go func() {
			defer GinkgoRecover()
			Expect(running.Start(actx)).To(Succeed())
		}()
		// The first run finds nothing: the namespace is not prod.
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.Audit).NotTo(BeNil())
			g.Expect(p.Status.Audit.Violations).To(BeZero())
		}).WithTimeout(20 * time.Second).Should(Succeed())

		// Let the run that the policy's creation queued pass, so that only the relabelling can
		// cause the next one.
		time.Sleep(3 * time.Second)
		namespace := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, namespace)).To(Succeed())
		namespace.Labels["env-"+ns] = "prod"
		Expect(k8sClient.Update(ctx, namespace)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.Audit.Violations).To(Equal(int32(1)))
		}).WithTimeout(20*time.Second).Should(Succeed(), "the audit ran after the relabelling, an hour before its interval")
	})
})

var _ = Describe("Policy status", func() {
	It("says, with the policy in force, what in it can only be a mistake", func() {
		ns := newNamespace(nil)
		p := clusterPolicy(ns, "bare-host", imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"evil.io"}}})
		Eventually(func() string { return condition(p, imagegatev1alpha1.ConditionReady) }).WithTimeout(10 * time.Second).Should(Equal(`True/Compiled: the policy is in force; warning: spec.images.deny[0]: "evil.io" names the Docker Hub image docker.io/library/evil.io, not the registry evil.io: did you mean "evil.io/**"?`))
	})
})
