package controller_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	reportsv1alpha1 "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/policy"
)

// ownedPod is a Pod of the Deployment's ReplicaSet <deployment>-<hash>, as the Deployment
// controller names and labels them.
func ownedPod(ns, deployment, hash, name, image string) *corev1.Pod {
	p := pod(ns, name, image)
	p.Labels = map[string]string{"pod-template-hash": hash}
	p.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: deployment + "-" + hash,
		UID: types.UID("rs-" + name), Controller: new(true),
	}}
	return p
}

// reportingAuditor is the suite's auditor with reports on, and no memory of earlier writes (a
// new leader).
func reportingAuditor() *controller.Auditor {
	return &controller.Auditor{
		Client: auditor.Client, Cache: auditor.Cache, Pods: auditor.Pods, Snapshots: snapshots, Interval: time.Hour, Excluded: auditor.Excluded,
		Reports: &controller.Reporter{Client: auditor.Client, Reader: k8sClient},
	}
}

var _ = Describe("OpenReports", func() {
	It("writes one Report per namespace, by workload, only when a result changes, and deletes it when nothing is left", func() {
		ns := newNamespace(nil)
		Expect(createErr(ownedPod(ns, "web", "7d9c5", "web-7d9c5-a", "ghcr.io/acme/web:1"))).To(BeEmpty())
		Expect(createErr(ownedPod(ns, "web", "7d9c5", "web-7d9c5-b", "ghcr.io/acme/web:1"))).To(BeEmpty())
		Expect(createErr(pod(ns, "stray", "quay.io/evil/miner:1"))).To(BeEmpty())
		p := clusterPolicy(ns, "acme", allowAcme)
		Eventually(func() int {
			return len(cachedPods(ns))
		}).WithTimeout(10 * time.Second).Should(Equal(3))

		audit := reportingAuditor()
		Expect(audit.Run(ctx, snapshots.Snapshot())).To(Succeed())

		var report reportsv1alpha1.Report
		key := client.ObjectKey{Namespace: ns, Name: controller.ReportName}
		Expect(k8sClient.Get(ctx, key, &report)).To(Succeed())
		Expect(report.Source).To(Equal("imagegate"))
		Expect(report.Summary).To(Equal(reportsv1alpha1.ReportSummary{Pass: 1, Fail: 1}), "the Deployment's two Pods are one result")
		Expect(report.Results).To(HaveLen(2))
		fail, pass := report.Results[0], report.Results[1]
		Expect(fail.Result).To(BeEquivalentTo("fail"))
		Expect(fail.Policy).To(Equal(p.Name))
		Expect(fail.Rule).To(Equal("images.allow"))
		var stray corev1.Pod
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stray"}, &stray)).To(Succeed())
		Expect(fail.Subjects).To(Equal([]corev1.ObjectReference{{APIVersion: "v1", Kind: "Pod", Namespace: ns, Name: "stray", UID: stray.UID}}))
		Expect(fail.Description).To(ContainSubstring(`spec.containers[0].image: image "quay.io/evil/miner:1" is not allowed by ClusterImagePolicy "` + p.Name + `"`))
		Expect(fail.Properties).To(HaveKeyWithValue("field", "spec.containers[0].image"))
		Expect(fail.Properties).To(HaveKeyWithValue("image", "quay.io/evil/miner:1"))
		Expect(fail.Properties).To(HaveKeyWithValue("mode", "Enforce"))
		Expect(pass.Result).To(BeEquivalentTo("pass"))
		Expect(pass.Subjects[0].Kind).To(Equal("Deployment"))
		Expect(pass.Subjects[0].Name).To(Equal("web"))

		By("a pass that finds the same writes nothing")
		written := report.ResourceVersion
		Expect(audit.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, key, &report)).To(Succeed())
		Expect(report.ResourceVersion).To(Equal(written))

		By("a new leader reads what was written, and writes nothing either")
		fresh := reportingAuditor()
		Expect(fresh.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, key, &report)).To(Succeed())
		Expect(report.ResourceVersion).To(Equal(written))

		By("a policy moved to Audit: the violation is a fail marked Audit, the first time stays")
		first := report.Results[1].Timestamp
		base := client.MergeFrom(p.DeepCopy())
		p.Spec.Mode = imagegatev1alpha1.ModeAudit
		Expect(k8sClient.Patch(ctx, p, base)).To(Succeed())
		Eventually(func() imagegatev1alpha1.PolicyMode {
			d := snapshots.Snapshot().Evaluate(&policy.Subject{Namespace: ns, NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns},
				Images: []policy.Image{{Field: "spec.containers[0].image", Ref: "quay.io/evil/miner:1", Container: "c0"}}})
			if len(d.Violations) == 0 {
				return ""
			}
			return d.Violations[0].Mode
		}).WithTimeout(10 * time.Second).Should(Equal(imagegatev1alpha1.ModeAudit))
		Expect(fresh.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, key, &report)).To(Succeed())
		Expect(report.ResourceVersion).NotTo(Equal(written))
		Expect(report.Results[0].Result).To(BeEquivalentTo("fail"))
		Expect(report.Results[0].Properties).To(HaveKeyWithValue("mode", "Audit"))
		Expect(report.Results[1].Timestamp).To(Equal(first), "the pass result is the same one")

		By("nothing left to report: the Report goes")
		Expect(k8sClient.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(func() int {
			return len(cachedPods(ns))
		}).WithTimeout(10 * time.Second).Should(BeZero())
		Expect(fresh.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, key, &report))).To(BeTrue())
	})
})

var _ = Describe("Enforcement after a clean audit", func() {
	It("acts as Audit while running Pods would be refused, then refuses once an audit pass finds none", func() {
		ns := newNamespace(nil)
		Expect(createErr(pod(ns, "legacy", "quay.io/legacy/app:1"))).To(BeEmpty())
		spec := allowAcme
		spec.Enforcement = imagegatev1alpha1.EnforceAfterCleanAudit
		p := clusterPolicy(ns, "wait", spec)
		ref := policy.Ref{Kind: policy.KindClusterImagePolicy, Name: p.Name}
		Expect(snapshots.Snapshot().AwaitingCleanAudit()).To(HaveKey(ref))
		Expect(condition(p, imagegatev1alpha1.ConditionReady)).To(ContainSubstring("acting as Audit until an audit pass finds no running Pod"))
		Eventually(func() int {
			return len(cachedPods(ns))
		}).WithTimeout(10 * time.Second).Should(Equal(1))

		Expect(auditor.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.Status.Enforcement).NotTo(BeNil())
		Expect(p.Status.Enforcement.Mode).To(Equal(imagegatev1alpha1.ModeAudit))
		Expect(p.Status.Enforcement.Reason).To(Equal(imagegatev1alpha1.ReasonAwaitingCleanAudit))
		Expect(p.Status.Enforcement.Message).To(ContainSubstring("found 1 running Pods that it would refuse (" + ns + "/legacy: images.allow)"))
		waiting := p.ResourceVersion

		By("the same finding again writes nothing")
		Expect(auditor.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.ResourceVersion).To(Equal(waiting))

		By("the Pod is gone: the next pass switches the policy to Enforce, on every replica")
		Expect(k8sClient.Delete(ctx, pod(ns, "legacy"), client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(func() int {
			return len(cachedPods(ns))
		}).WithTimeout(10 * time.Second).Should(BeZero())
		Expect(auditor.Run(ctx, snapshots.Snapshot())).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		Expect(p.Status.Enforcement.Mode).To(Equal(imagegatev1alpha1.ModeEnforce))
		Expect(p.Status.Enforcement.Reason).To(Equal(imagegatev1alpha1.ReasonCleanAudit))
		Expect(p.Status.Enforcement.ObservedGeneration).To(Equal(p.Generation))
		Eventually(func() map[policy.Ref]int64 { return snapshots.Snapshot().AwaitingCleanAudit() }).WithTimeout(10 * time.Second).ShouldNot(HaveKey(ref))
		d := snapshots.Snapshot().Evaluate(&policy.Subject{Namespace: ns, NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns},
			Images: []policy.Image{{Field: "spec.containers[0].image", Ref: "quay.io/legacy/app:1", Container: "c0"}}})
		Expect(d.Allowed()).To(BeFalse(), "it refuses now")

		By("the API refuses AfterCleanAudit with a mode that refuses nothing")
		bad := clusterPolicyObject(ns+"-bad", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeWarn, Enforcement: imagegatev1alpha1.EnforceAfterCleanAudit, Images: allowAcme.Images})
		Expect(createErr(bad)).To(ContainSubstring("enforcement AfterCleanAudit only applies to mode Enforce"))

		By("a new spec waits for a clean audit again")
		base := client.MergeFrom(p.DeepCopy())
		p.Spec.Images.Allow = append(p.Spec.Images.Allow, "docker.io/library/**")
		Expect(k8sClient.Patch(ctx, p, base)).To(Succeed())
		Eventually(func() map[policy.Ref]int64 { return snapshots.Snapshot().AwaitingCleanAudit() }).WithTimeout(10 * time.Second).Should(HaveKey(ref))
	})
})

func clusterPolicyObject(name string, spec imagegatev1alpha1.ImagePolicySpec) *imagegatev1alpha1.ClusterImagePolicy {
	return &imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}
