package controller

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,resourceNames=imagegate-mutating-webhook-configuration,verbs=get;patch

const (
	// PinWebhookName is the pinning webhook's name in its MutatingWebhookConfiguration.
	PinWebhookName = "pin.pods.imagegate.io"
	// PinConditionName is the match condition the manager keeps on the pinning webhook.
	PinConditionName = "verify-rules"
	// pinScopeFieldManager owns that match condition, and nothing else of the configuration.
	pinScopeFieldManager = "imagegate-pin-scope"
)

// PinScopeSyncer keeps the pinning webhook's match condition (PinConditionName) in step with
// the verify rules in force, so that the apiserver calls the webhook only for Pods with an
// image a verify rule may cover and that is not pinned. It applies that one condition with
// server-side apply under its own field manager, leaving the rest of the configuration to
// whoever installed it; it runs on the leader, on every new snapshot and every Resync (which
// also repairs a configuration re-applied without it).
type PinScopeSyncer struct {
	Client kubernetes.Interface
	Store  *policy.Store
	// Configuration is the MutatingWebhookConfiguration's name.
	Configuration string
	// Resync is how often the condition is checked without a new snapshot; 0: a minute.
	Resync time.Duration
}

// NeedLeaderElection is true: one replica writes the condition.
func (s *PinScopeSyncer) NeedLeaderElection() bool { return true }

// Start syncs until ctx ends.
func (s *PinScopeSyncer) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("pin-scope").WithValues("mutatingWebhookConfiguration", s.Configuration)
	changed := s.Store.Subscribe()
	resync := s.Resync
	if resync <= 0 {
		resync = time.Minute
	}
	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	last := ""
	for {
		if snap := s.Store.Snapshot(); snap != nil {
			want := podspec.PinCondition(snap.PinScope())
			if err := s.Sync(ctx, want); err != nil {
				log.Error(err, "keeping the pinning webhook's match condition: the webhook is called for Pods it need not see, or Pods a new verify rule covers are refused as not pinned until it succeeds")
			} else if want != last {
				log.Info("pinning webhook scope updated", "condition", PinConditionName, "length", len(want))
				last = want
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-ticker.C:
		}
	}
}

// Sync applies expression as the pinning webhook's PinConditionName condition, unless it is
// there already.
func (s *PinScopeSyncer) Sync(ctx context.Context, expression string) error {
	api := s.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, s.Configuration, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("MutatingWebhookConfiguration %s not found (pinning not installed?): %w", s.Configuration, err)
		}
		return err
	}
	hook := findWebhook(cfg.Webhooks, PinWebhookName)
	if hook == nil {
		return fmt.Errorf("MutatingWebhookConfiguration %s has no webhook %s", s.Configuration, PinWebhookName)
	}
	// With no verify rule the condition is "false", and the objectSelector that matches no
	// object says the same earlier: the apiserver checks it before it converts the Pod for the
	// conditions, so the webhook costs a Pod almost nothing. It is set only over the default
	// (empty) selector, and taken out only when it is this one, so an installer's own
	// selector is never replaced.
	never := expression == "false"
	ours := isNeverSelector(hook.ObjectSelector)
	useSelector := never && (ours || emptySelector(hook.ObjectSelector))
	inPlace := useSelector == ours
	for _, c := range hook.MatchConditions {
		if c.Name == PinConditionName && c.Expression == expression && inPlace {
			return nil
		}
	}
	wh := admissionregistrationv1ac.MutatingWebhook().WithName(PinWebhookName).WithMatchConditions(
		admissionregistrationv1ac.MatchCondition().WithName(PinConditionName).WithExpression(expression))
	if useSelector {
		sel := metav1ac.LabelSelector()
		for _, r := range PinObjectSelector(expression).MatchExpressions {
			sel = sel.WithMatchExpressions(metav1ac.LabelSelectorRequirement().WithKey(r.Key).WithOperator(r.Operator))
		}
		wh = wh.WithObjectSelector(sel)
	}
	// Applied without the selector, the field this manager owned goes, and the apiserver
	// defaults it back to the empty one.
	apply := admissionregistrationv1ac.MutatingWebhookConfiguration(s.Configuration).WithWebhooks(wh)
	_, err = api.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: pinScopeFieldManager, Force: true})
	return err
}

// neverLabel is the key of the selector that matches no object: it must exist and not exist.
const neverLabel = "imagegate.io/no-verify-rule"

// PinObjectSelector is the objectSelector the manager gives the pinning webhook (over the
// default, empty one) with the condition expression: one that matches no object when the
// condition is "false", nil otherwise.
func PinObjectSelector(expression string) *metav1.LabelSelector {
	if expression != "false" {
		return nil
	}
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: neverLabel, Operator: metav1.LabelSelectorOpExists},
		{Key: neverLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
	}}
}

func isNeverSelector(s *metav1.LabelSelector) bool {
	return s != nil && equality.Semantic.DeepEqual(s, PinObjectSelector("false"))
}

func emptySelector(s *metav1.LabelSelector) bool {
	return s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0)
}

func findWebhook(hooks []admissionregistrationv1.MutatingWebhook, name string) *admissionregistrationv1.MutatingWebhook {
	for i := range hooks {
		if hooks[i].Name == name {
			return &hooks[i]
		}
	}
	return nil
}
