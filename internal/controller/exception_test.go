package controller_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

var _ = Describe("ImagePolicyException status", func() {
	It("is Active, then Expired at its expiresAt with no event needed, and stops exempting then", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "no-latest", imagegatev1alpha1.ImagePolicySpec{Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}})
		expires := metav1.NewTime(time.Now().Add(4 * time.Second).Truncate(time.Second))
		ex := &imagegatev1alpha1.ImagePolicyException{
			ObjectMeta: metav1.ObjectMeta{Name: "short", Namespace: ns},
			Spec: imagegatev1alpha1.ImagePolicyExceptionSpec{
				Reason: "a short one", ExpiresAt: &expires,
				Policies: []imagegatev1alpha1.ExceptedPolicy{{Kind: "ClusterImagePolicy", Name: ns + "-no-latest"}},
			},
		}
		Expect(k8sClient.Create(ctx, ex)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(ctx, ex) })
		reason := func() string {
			var got imagegatev1alpha1.ImagePolicyException
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(ex), &got); err != nil {
				return err.Error()
			}
			for _, c := range got.Status.Conditions {
				if c.Type == imagegatev1alpha1.ConditionActive {
					return string(c.Status) + "/" + c.Reason
				}
			}
			return ""
		}
		// Within the default 72h warning: active, expiring soon.
		Eventually(reason).WithTimeout(10 * time.Second).Should(Equal("True/ExpiringSoon"))
		sub := &policy.Subject{Namespace: ns, NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns}, Images: []policy.Image{{Field: "f", Ref: "nginx:latest"}}}
		Eventually(func() bool { d := snapshots.Snapshot().Evaluate(sub); return d.Allowed() }).WithTimeout(10 * time.Second).Should(BeTrue())
		Eventually(reason).WithTimeout(15 * time.Second).Should(Equal("False/Expired"))
		Expect(time.Now()).To(BeTemporally(">=", expires.Time))
		d := snapshots.Snapshot().Evaluate(sub)
		Expect(d.Allowed()).To(BeFalse(), "an expired exception still exempted")
		Expect(metricValue("imagegate_exceptions", map[string]string{"state": "Expired"})).To(BeNumerically(">=", 1))
	})
})

var _ = Describe("ImagePolicyException status with allowBreakGlass", func() {
	It("says where the grant changes nothing", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "open", imagegatev1alpha1.ImagePolicySpec{AllowBreakGlass: ptr.To(true), Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}})
		ex := &imagegatev1alpha1.ImagePolicyException{
			ObjectMeta: metav1.ObjectMeta{Name: "grant", Namespace: ns},
			Spec: imagegatev1alpha1.ImagePolicyExceptionSpec{
				Reason: "incident", AllowBreakGlass: ptr.To(true),
				Policies: []imagegatev1alpha1.ExceptedPolicy{{Kind: "ClusterImagePolicy", Name: ns + "-open"}},
			},
		}
		Expect(k8sClient.Create(ctx, ex)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(ctx, ex) })
		Eventually(func() string { return condition(ex, imagegatev1alpha1.ConditionActive) }).WithTimeout(10 * time.Second).Should(HaveSuffix(`; allowBreakGlass changes nothing for ClusterImagePolicy "` + ns + `-open", which do not set allowBreakGlass with breakGlassRequiresException`))
	})
})
