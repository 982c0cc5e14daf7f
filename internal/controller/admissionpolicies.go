package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
// snapshot, when an exception expires, and every Resync (which also recreates
// an object deleted by hand). It runs on the leader.
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
//
// The order keeps every Pod decided by one or the other: the objects are written first, then
// the condition narrows (or widens) what the webhook sees, and only then are the objects no
// longer planned deleted. When an object cannot be written, the condition becomes "true", so
// the webhook decides every Pod until a later pass succeeds; when the condition cannot be
// removed, nothing is deleted.
func (s *AdmissionPolicySyncer) apply(ctx context.Context, plan vap.Plan, condition string) (int, error) {
	api := s.Client.AdmissionregistrationV1()
	sel := metav1.ListOptions{LabelSelector: vap.ManagedByLabel + "=" + vap.ManagedByValue}
	havePolicies, err := api.ValidatingAdmissionPolicies().List(ctx, sel)
	if err != nil {
		return 0, fmt.Errorf("listing ValidatingAdmissionPolicies: %w", err)
	}
	haveBindings, err := api.ValidatingAdmissionPolicyBindings().List(ctx, sel)
	if err != nil {
		return 0, fmt.Errorf("listing ValidatingAdmissionPolicyBindings: %w", err)
	}
	// Policies before bindings: a binding to a missing policy refuses every request it
	// matches.
	writes, stalePolicies, errs := syncKind(ctx, api.ValidatingAdmissionPolicies(), "ValidatingAdmissionPolicy", plan.Policies, havePolicies.Items,
		func(p *admissionregistrationv1.ValidatingAdmissionPolicy) any { return p.Spec })
	n, staleBindings, e := syncKind(ctx, api.ValidatingAdmissionPolicyBindings(), "ValidatingAdmissionPolicyBinding", plan.Bindings, haveBindings.Items,
		func(b *admissionregistrationv1.ValidatingAdmissionPolicyBinding) any { return b.Spec })
	writes += n
	errs = append(errs, e...)
	if len(errs) > 0 && condition != "" {
		condition = "true"
	}
	n, err = s.syncCondition(ctx, condition)
	writes += n
	if err != nil {
		errs = append(errs, err)
		if condition == "" {
			return writes, errors.Join(errs...)
		}
	}
	// Bindings before their policies.
	n, e = deleteAll(ctx, api.ValidatingAdmissionPolicyBindings(), "ValidatingAdmissionPolicyBinding", staleBindings)
	writes += n
	errs = append(errs, e...)
	n, e = deleteAll(ctx, api.ValidatingAdmissionPolicies(), "ValidatingAdmissionPolicy", stalePolicies)
	writes += n
	errs = append(errs, e...)
	return writes, errors.Join(errs...)
}

// objectAPI is what syncKind needs of a typed client (ValidatingAdmissionPolicies,
// ValidatingAdmissionPolicyBindings).
type objectAPI[T any] interface {
	Create(ctx context.Context, obj *T, opts metav1.CreateOptions) (*T, error)
	Update(ctx context.Context, obj *T, opts metav1.UpdateOptions) (*T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// specHashAnnotation holds a hash of the spec as written: the apiserver defaults fields, so the
// stored spec never equals the generated one, and comparing them would rewrite every Resync.
const specHashAnnotation = "imagegate.io/spec-hash"

// syncKind creates or updates the objects of want that have (what the apiserver holds) lacks
// or holds otherwise, and returns how many it wrote and the names of the objects of have that
// want no longer has, for the caller to delete in its order.
func syncKind[T any, P interface {
	*T
	metav1.Object
}](ctx context.Context, api objectAPI[T], kind string, want, have []T, spec func(P) any) (int, []string, []error) {
	existing := map[string]P{}
	for i := range have {
		existing[P(&have[i]).GetName()] = &have[i]
	}
	writes := 0
	var errs []error
	for i := range want {
		w := P(&want[i])
		annotations := maps.Clone(w.GetAnnotations())
		if annotations == nil {
			annotations = map[string]string{}
		}
		b, _ := json.Marshal(spec(w))
		sum := sha256.Sum256(b)
		annotations[specHashAnnotation] = hex.EncodeToString(sum[:16])
		w.SetAnnotations(annotations)
		h, ok := existing[w.GetName()]
		delete(existing, w.GetName())
		var err error
		switch {
		case !ok:
			_, err = api.Create(ctx, w, metav1.CreateOptions{FieldManager: admissionPolicyFieldManager})
		case !maps.Equal(h.GetLabels(), w.GetLabels()) || !maps.Equal(h.GetAnnotations(), w.GetAnnotations()):
			w.SetResourceVersion(h.GetResourceVersion())
			_, err = api.Update(ctx, w, metav1.UpdateOptions{FieldManager: admissionPolicyFieldManager})
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("writing %s %s: %w", kind, w.GetName(), err))
			continue
		}
		writes++
	}
	return writes, slices.Sorted(maps.Keys(existing)), errs
}

// deleteAll deletes the named objects of one kind.
func deleteAll[T any](ctx context.Context, api objectAPI[T], kind string, names []string) (int, []error) {
	writes := 0
	var errs []error
	for _, name := range names {
		if err := api.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s %s: %w", kind, name, err))
			continue
		}
		writes++
	}
	return writes, errs
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
