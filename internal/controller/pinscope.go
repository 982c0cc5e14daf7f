package controller

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
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
	for _, c := range hook.MatchConditions {
		if c.Name == PinConditionName && c.Expression == expression {
			return nil
		}
	}
	apply := admissionregistrationv1ac.MutatingWebhookConfiguration(s.Configuration).WithWebhooks(
		admissionregistrationv1ac.MutatingWebhook().WithName(PinWebhookName).WithMatchConditions(
			admissionregistrationv1ac.MatchCondition().WithName(PinConditionName).WithExpression(expression)))
	_, err = api.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: pinScopeFieldManager, Force: true})
	return err
}

func findWebhook(hooks []admissionregistrationv1.MutatingWebhook, name string) *admissionregistrationv1.MutatingWebhook {
	for i := range hooks {
		if hooks[i].Name == name {
			return &hooks[i]
		}
	}
	return nil
}
