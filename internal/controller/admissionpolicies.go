package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/vap"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=imagegate-validating-webhook-configuration,verbs=get;patch

const (
	// PodWebhookName is the validating Pod webhook's name in its configuration.
	PodWebhookName = "pods.imagegate.io"
	// ScopeConditionName is the match condition the manager keeps on the Pod webhook while
	// name rules are in ValidatingAdmissionPolicies (vap.WebhookCondition).
	ScopeConditionName = "admission-policies-scope"
	// admissionPolicyFieldManager owns that condition, and nothing else of the configuration.
	admissionPolicyFieldManager = "imagegate-admission-policies"
)

// AdmissionPolicySyncer keeps the ValidatingAdmissionPolicies and bindings compiled from the
// policies' name rules (internal/vap) in the apiserver, and the Pod webhook's match condition
// that sends it only the Pods they cannot decide. It owns the objects labelled
// app.kubernetes.io/managed-by=imagegate: it creates, updates and deletes them, on every new
// snapshot, when an exception starts or stops applying, and every Resync (which also repairs
// an object edited or deleted by hand). It runs on the leader.
//
// Disabled, it runs once at start and removes what an earlier run in this mode left: the
// objects and the match condition, so that turning the mode off gives the webhook back every
// Pod.
type AdmissionPolicySyncer struct {
	Client kubernetes.Interface
	Store  *policy.Store
	// Enabled is the mode (--admission-policies).
	Enabled bool
	// Configuration is the ValidatingWebhookConfiguration of the Pod webhook.
	Configuration string
	// Excluded are the namespaces the webhooks never see: the bindings leave them out too.
	Excluded []string
	// Resync is how often the objects are checked without a change; 0: 10 seconds.
	Resync time.Duration
	// Now is the clock exceptions expire by; nil: time.Now.
	Now func() time.Time
}

// NeedLeaderElection is true: one replica writes.
func (s *AdmissionPolicySyncer) NeedLeaderElection() bool { return true }

// Start syncs until ctx ends.
func (s *AdmissionPolicySyncer) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("admission-policies")
	if !s.Enabled {
		n, err := s.apply(ctx, vap.Plan{}, "")
		switch {
		case apierrors.IsNotFound(err):
			log.V(1).Info("not removing ValidatingAdmissionPolicies of an earlier run: the Pod webhook's configuration is not there to take their place", "error", err.Error())
		case apierrors.IsForbidden(err):
			log.V(1).Info("not removing ValidatingAdmissionPolicies of an earlier run: not allowed", "error", err.Error())
		case err != nil:
			log.Error(err, "removing the ValidatingAdmissionPolicies and the match condition an earlier run with --admission-policies left")
		case n > 0:
			log.Info("removed what --admission-policies had written: the webhook decides every Pod again", "changes", n)
		}
		return nil
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	changed := s.Store.Subscribe()
	resync := s.Resync
	if resync <= 0 {
		resync = 10 * time.Second
	}
	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	for {
		var next <-chan time.Time
		if snap := s.Store.Snapshot(); snap != nil {
			t := now()
			plan := vap.Build(snap.NameRules(t), vap.Options{ExcludedNamespaces: s.Excluded})
			n, err := s.apply(ctx, plan, vap.WebhookCondition(&plan, snap.PinScope()))
			if err != nil {
				log.Error(err, "keeping the ValidatingAdmissionPolicies: the webhook still decides every Pod it is sent, but with imagegate down the apiserver may lack a rule")
			} else if n > 0 {
				log.Info("ValidatingAdmissionPolicies updated", "changes", n, "policies", len(plan.Policies), "inWebhook", len(plan.Webhook))
			}
			if e := snap.NextExceptionChange(t); !e.IsZero() {
				next = time.After(e.Sub(t) + 10*time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-ticker.C:
		case <-next:
		}
	}
}

// apply makes the apiserver hold exactly plan's objects and condition as the Pod webhook's
// ScopeConditionName match condition ("" removes it), and returns how many writes it made.
// The webhook gets its condition first and loses it last: a Pod is never decided by neither.
func (s *AdmissionPolicySyncer) apply(ctx context.Context, plan vap.Plan, condition string) (int, error) {
	// The condition first: with it, the webhook stops seeing what the policies below decide;
	// without it (removed, or never applied), the webhook sees every Pod again, so the
	// policies may go. A condition that cannot be applied leaves the webhook deciding every
	// Pod: the policies are still written, and only a removal waits for it.
	n, err := s.syncCondition(ctx, condition)
	writes := n
	var errs []error
	if err != nil {
		if condition == "" {
			return writes, err
		}
		errs = append(errs, err)
	}
	api := s.Client.AdmissionregistrationV1()
	sel := metav1.ListOptions{LabelSelector: vap.ManagedByLabel + "=" + vap.ManagedByValue}

	// Policies before bindings (a binding to a missing policy refuses every request it
	// matches); deletions the other way round.
	havePolicies, err := api.ValidatingAdmissionPolicies().List(ctx, sel)
	if err != nil {
		return writes, fmt.Errorf("listing ValidatingAdmissionPolicies: %w", err)
	}
	existing := map[string]*admissionregistrationv1.ValidatingAdmissionPolicy{}
	for i := range havePolicies.Items {
		existing[havePolicies.Items[i].Name] = &havePolicies.Items[i]
	}
	for i := range plan.Policies {
		want := &plan.Policies[i]
		have := existing[want.Name]
		delete(existing, want.Name)
		same := samePolicy(orEmpty(have), want)
		switch {
		case have == nil:
			_, err = api.ValidatingAdmissionPolicies().Create(ctx, want, metav1.CreateOptions{FieldManager: admissionPolicyFieldManager})
		case !same:
			want.ResourceVersion = have.ResourceVersion
			_, err = api.ValidatingAdmissionPolicies().Update(ctx, want, metav1.UpdateOptions{FieldManager: admissionPolicyFieldManager})
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("writing ValidatingAdmissionPolicy %s (%s): %w", want.Name, want.Annotations[vap.PolicyAnnotation], err))
			continue
		}
		writes++
	}
	haveBindings, err := api.ValidatingAdmissionPolicyBindings().List(ctx, sel)
	if err != nil {
		return writes, errors.Join(append(errs, fmt.Errorf("listing ValidatingAdmissionPolicyBindings: %w", err))...)
	}
	existingB := map[string]*admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	for i := range haveBindings.Items {
		existingB[haveBindings.Items[i].Name] = &haveBindings.Items[i]
	}
	for i := range plan.Bindings {
		want := &plan.Bindings[i]
		have := existingB[want.Name]
		delete(existingB, want.Name)
		same := sameBinding(orEmptyBinding(have), want)
		switch {
		case have == nil:
			_, err = api.ValidatingAdmissionPolicyBindings().Create(ctx, want, metav1.CreateOptions{FieldManager: admissionPolicyFieldManager})
		case !same:
			want.ResourceVersion = have.ResourceVersion
			_, err = api.ValidatingAdmissionPolicyBindings().Update(ctx, want, metav1.UpdateOptions{FieldManager: admissionPolicyFieldManager})
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("writing ValidatingAdmissionPolicyBinding %s: %w", want.Name, err))
			continue
		}
		writes++
	}
	for name := range existingB {
		if err := api.ValidatingAdmissionPolicyBindings().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting ValidatingAdmissionPolicyBinding %s: %w", name, err))
			continue
		}
		writes++
	}
	for name := range existing {
		if err := api.ValidatingAdmissionPolicies().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting ValidatingAdmissionPolicy %s: %w", name, err))
			continue
		}
		writes++
	}
	return writes, errors.Join(errs...)
}

func orEmpty(p *admissionregistrationv1.ValidatingAdmissionPolicy) *admissionregistrationv1.ValidatingAdmissionPolicy {
	if p == nil {
		return &admissionregistrationv1.ValidatingAdmissionPolicy{}
	}
	return p
}

func orEmptyBinding(b *admissionregistrationv1.ValidatingAdmissionPolicyBinding) *admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	if b == nil {
		return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	}
	return b
}

// specHashAnnotation holds a hash of the spec as written: the apiserver defaults fields, so the
// stored spec never equals the generated one, and comparing them would rewrite every Resync.
const specHashAnnotation = "imagegate.io/spec-hash"

func specHash(spec any) string {
	b, _ := json.Marshal(spec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func samePolicy(have, want *admissionregistrationv1.ValidatingAdmissionPolicy) bool {
	if want.Annotations == nil {
		want.Annotations = map[string]string{}
	}
	want.Annotations[specHashAnnotation] = specHash(want.Spec)
	return maps.Equal(have.Labels, want.Labels) && maps.Equal(have.Annotations, want.Annotations)
}

func sameBinding(have, want *admissionregistrationv1.ValidatingAdmissionPolicyBinding) bool {
	if want.Annotations == nil {
		want.Annotations = map[string]string{}
	}
	want.Annotations[specHashAnnotation] = specHash(want.Spec)
	return maps.Equal(have.Labels, want.Labels) && maps.Equal(have.Annotations, want.Annotations)
}

// syncCondition applies expression as the Pod webhook's ScopeConditionName match condition,
// or removes it ("": applies nothing of it under this field manager), unless it is so already.
func (s *AdmissionPolicySyncer) syncCondition(ctx context.Context, expression string) (int, error) {
	api := s.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cfg, err := api.Get(ctx, s.Configuration, metav1.GetOptions{})
	if err != nil {
		// Not found when removing: the condition may be on a configuration of another name,
		// and removing the policies first would leave Pods that neither decides.
		return 0, fmt.Errorf("reading ValidatingWebhookConfiguration %s: %w", s.Configuration, err)
	}
	var hook *admissionregistrationv1.ValidatingWebhook
	for i := range cfg.Webhooks {
		if cfg.Webhooks[i].Name == PodWebhookName {
			hook = &cfg.Webhooks[i]
		}
	}
	if hook == nil {
		return 0, fmt.Errorf("ValidatingWebhookConfiguration %s has no webhook %s", s.Configuration, PodWebhookName)
	}
	have := false
	for _, c := range hook.MatchConditions {
		if c.Name == ScopeConditionName {
			if c.Expression == expression {
				return 0, nil
			}
			have = true
		}
	}
	if expression == "" && !have {
		return 0, nil
	}
	wh := admissionregistrationv1ac.ValidatingWebhook().WithName(PodWebhookName)
	if expression != "" {
		wh = wh.WithMatchConditions(admissionregistrationv1ac.MatchCondition().WithName(ScopeConditionName).WithExpression(expression))
	}
	apply := admissionregistrationv1ac.ValidatingWebhookConfiguration(s.Configuration).WithWebhooks(wh)
	_, err = api.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: admissionPolicyFieldManager, Force: true})
	if err != nil {
		return 0, fmt.Errorf("applying the match condition %s of %s: %w", ScopeConditionName, PodWebhookName, err)
	}
	return 1, nil
}
