package controller

import (
	"context"
	"errors"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/vap"
)

// TestAdmissionPolicySyncerApply: the objects of a plan are created once, a second pass
// writes nothing, and a removal takes the condition and then every object away.
func TestAdmissionPolicySyncerApply(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: PodWebhookName}},
	})
	s := &AdmissionPolicySyncer{Client: cs, Configuration: "cfg", Enabled: true}
	snap := policy.Compile([]v1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "trusted"},
		Spec:       v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}}},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: "warn"},
		Spec:       v1alpha1.ImagePolicySpec{Mode: v1alpha1.ModeWarn, Tags: v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}}},
	}}, nil)
	plan := vap.Build(snap.NameRules(metav1.Now().Time), vap.Options{})
	cond := vap.WebhookCondition(&plan, snap.PinScope())
	n, err := s.apply(ctx, plan, cond)
	if err != nil || n != 5 {
		t.Fatalf("first pass: %d writes, %v; want 5 (the condition, two policies, two bindings)", n, err)
	}
	if got := conditionOf(t, cs); got != cond {
		t.Fatalf("the webhook's condition is %q, want %q", got, cond)
	}
	plan = vap.Build(snap.NameRules(metav1.Now().Time), vap.Options{})
	if n, err := s.apply(ctx, plan, cond); err != nil || n != 0 {
		t.Fatalf("second pass: %d writes, %v; want none", n, err)
	}
	if n, err := s.apply(ctx, vap.Plan{}, ""); err != nil || n == 0 {
		t.Fatalf("removal: %d writes, %v", n, err)
	}
	if got := conditionOf(t, cs); got != "" {
		t.Fatalf("the webhook's condition is still there after removal: %q", got)
	}
	list, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("after removal: %d policies left, %v", len(list.Items), err)
	}
}

func conditionOf(t *testing.T, cs *fake.Clientset) string {
	t.Helper()
	cfg, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Webhooks[0].MatchConditions {
		if c.Name == ScopeConditionName {
			return c.Expression
		}
	}
	return ""
}

// TestAdmissionPolicySyncerSendsEveryPodOnFailure: when an object cannot be written, the
// webhook's condition is "true" (every Pod goes to the webhook), never the narrower one that
// would leave the unwritten policy's Pods to neither.
func TestAdmissionPolicySyncerSendsEveryPodOnFailure(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: PodWebhookName}},
	})
	cs.PrependReactor("create", "validatingadmissionpolicies", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd is full")
	})
	s := &AdmissionPolicySyncer{Client: cs, Configuration: "cfg", Enabled: true}
	snap := policy.Compile([]v1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "trusted"},
		Spec:       v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}}},
	}}, nil)
	plan := vap.Build(snap.NameRules(metav1.Now().Time), vap.Options{})
	if _, err := s.apply(ctx, plan, vap.WebhookCondition(&plan, snap.PinScope())); err == nil || !strings.Contains(err.Error(), "etcd is full") {
		t.Fatalf("apply: %v, want the create's error", err)
	}
	if got := conditionOf(t, cs); got != "true" {
		t.Fatalf("the webhook's condition is %q after a failed write, want \"true\"", got)
	}
}
