package controller_test

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// The pinning webhook's match condition follows the verify rules in force, through the real
// apiserver (which compiles and cost-checks each condition it is given).
var _ = Describe("the pinning webhook's scope", Ordered, func() {
	const name = "pin-scope-test"
	var (
		clientset *kubernetes.Clientset
		stopSync  context.CancelFunc
	)

	condition := func() string {
		cfg, err := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		for _, c := range cfg.Webhooks[0].MatchConditions {
			if c.Name == controller.PinConditionName {
				return c.Expression
			}
		}
		return "(none)"
	}

	BeforeAll(func() {
		var err error
		clientset, err = kubernetes.NewForConfig(testEnv.Config)
		Expect(err).NotTo(HaveOccurred())
		// Never called: no namespace has the label it selects.
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name:                    controller.PinWebhookName,
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/mutate-v1-pod")},
				FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
				SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
				AdmissionReviewVersions: []string{"v1"},
				NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pin-scope-test": "never"}},
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}},
				MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "image-without-digest", Expression: "true"}},
			}},
		}
		_, err = clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			Expect(clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})).To(Succeed())
		})
		syncCtx, stop := context.WithCancel(ctx)
		stopSync = stop
		DeferCleanup(stop)
		syncer := &controller.PinScopeSyncer{Client: clientset, Store: snapshots, Configuration: name, Resync: 200 * time.Millisecond}
		go func() {
			defer GinkgoRecover()
			Expect(syncer.Start(syncCtx)).To(Succeed())
		}()
	})

	It("adds a verify rule's registry when it is in force and takes it out when it goes", func() {
		ns := newNamespace(nil)
		entry := "['', 'pin-scope.example', 'acme']"
		Eventually(condition).ShouldNot(Equal("(none)"), "the condition is added")
		Expect(condition()).NotTo(ContainSubstring(entry))

		p := clusterPolicy(ns, "verify", imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Images:          []imagegatev1alpha1.ImagePattern{"pin-scope.example:5000/acme/**"},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
			Signers:         []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{PublicKey: "k"}}},
		}})
		Eventually(condition).WithTimeout(10 * time.Second).Should(ContainSubstring(entry))

		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		Eventually(condition).WithTimeout(10 * time.Second).ShouldNot(ContainSubstring(entry))
	})

	It("puts the condition back when the configuration is applied again without it, and leaves the rest alone", func() {
		Eventually(condition).ShouldNot(Equal("(none)"))
		cfg, err := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		cfg.Webhooks[0].MatchConditions = []admissionregistrationv1.MatchCondition{{Name: "image-without-digest", Expression: "true"}}
		cfg.Webhooks[0].TimeoutSeconds = ptr.To[int32](7)
		_, err = clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cfg, metav1.UpdateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(condition).WithTimeout(10 * time.Second).ShouldNot(Equal("(none)"))
		cfg, err = clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Webhooks[0].MatchConditions[0]).To(Equal(admissionregistrationv1.MatchCondition{Name: "image-without-digest", Expression: "true"}))
		Expect(*cfg.Webhooks[0].TimeoutSeconds).To(BeEquivalentTo(7))
	})

	It("is accepted by the apiserver at its largest", func() {
		var entries []policy.PinEntry
		for i := range 512 {
			entries = append(entries, policy.PinEntry{Namespace: "team-" + strings.Repeat("x", i%40), Host: "registry.example.com", PathPrefix: "acme/team-" + strings.Repeat("p", i%40)})
		}
		stopSync() // the running syncer would put the snapshot's condition back
		largest := podspec.PinCondition(entries)
		Expect(largest).NotTo(Equal("true"))
		syncer := &controller.PinScopeSyncer{Client: clientset, Store: snapshots, Configuration: name}
		Expect(syncer.Sync(ctx, largest)).To(Succeed())
		Expect(condition()).To(Equal(largest))
	})

	It("with no verify rule also selects no object, and never replaces an installer's selector", func() {
		stopSync()
		hooks := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations()
		selector := func() *metav1.LabelSelector {
			cfg, err := hooks.Get(ctx, name, metav1.GetOptions{})
			Expect(err).NotTo(HaveOccurred())
			return cfg.Webhooks[0].ObjectSelector
		}
		matchesNothing := func(s *metav1.LabelSelector) {
			GinkgoHelper()
			sel, err := metav1.LabelSelectorAsSelector(s)
			Expect(err).NotTo(HaveOccurred())
			Expect(s.MatchExpressions).NotTo(BeEmpty())
			for _, l := range []labels.Set{nil, {"imagegate.io/no-verify-rule": ""}, {"app": "web"}} {
				Expect(sel.Matches(l)).To(BeFalse(), "labels %v", l)
			}
		}
		syncer := &controller.PinScopeSyncer{Client: clientset, Store: snapshots, Configuration: name}

		Expect(syncer.Sync(ctx, "false")).To(Succeed())
		Expect(condition()).To(Equal("false"))
		matchesNothing(selector())

		// A verify rule again: the selector goes, back to the apiserver's default.
		Expect(syncer.Sync(ctx, "object.spec.containers.size() > 0")).To(Succeed())
		Expect(condition()).To(Equal("object.spec.containers.size() > 0"))
		Expect(selector()).To(Equal(&metav1.LabelSelector{}))

		// An installer's own selector stays, whatever the condition.
		cfg, err := hooks.Get(ctx, name, metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		own := &metav1.LabelSelector{MatchLabels: map[string]string{"imagegate.io/pin": "yes"}}
		cfg.Webhooks[0].ObjectSelector = own
		_, err = hooks.Update(ctx, cfg, metav1.UpdateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(syncer.Sync(ctx, "false")).To(Succeed())
		Expect(condition()).To(Equal("false"))
		Expect(selector()).To(Equal(own))
	})
})
