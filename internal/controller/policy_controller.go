// Package controller holds imagegate's reconcilers: the one that compiles every policy into
// the snapshot the webhook decides with, and writes each policy's status.
package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/text"
	"github.com/imagegate/imagegate/internal/vap"
)

// snapshotKey is the one work item: every policy change rebuilds the whole snapshot, so
// events collapse into a single queued rebuild however many arrive at once.
var snapshotKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "snapshot"}}

// PolicyReconciler compiles all ImagePolicies and ClusterImagePolicies from the manager's
// cache into a policy.Snapshot whenever one of them changes, publishes it in a policy.Store
// for the webhooks and the audit, and writes each policy's Ready condition.
//
// Every replica compiles (each serves the webhook); only the elected leader writes status.
type PolicyReconciler struct {
	client.Client
	store  *policy.Store
	opts   ReconcilerOptions
	leader atomic.Bool
	// trigger queues a rebuild: at start, and when this replica becomes the leader.
	trigger chan event.GenericEvent
}

// ReconcilerOptions configure a PolicyReconciler.
type ReconcilerOptions struct {
	// Metrics may be nil.
	Metrics *telemetry.Metrics
	// Trust compiles the trust material of verify sections (nil: none, see policy.Options).
	Trust policy.TrustCompiler
	// TrustNamespace is the namespace whose Secrets and ConfigMaps verify sections name; a
	// change there rebuilds the snapshot. Empty: not watched.
	TrustNamespace string
	// Events, when set, records on exceptions when they are about to expire and when they
	// have expired.
	Events events.EventRecorder
	// ExpiryWarning is how long before an exception's expiresAt it is reported as expiring
	// soon (condition reason, Event, metric). Zero: 72h.
	ExpiryWarning time.Duration
	// Now is the clock exceptions expire by; nil: time.Now.
	Now func() time.Time
	// AdmissionPolicies says name rules are compiled into ValidatingAdmissionPolicies
	// (AdmissionPolicySyncer): each policy's InAPIServer condition then says whether its are.
	AdmissionPolicies bool
}

// NewPolicyReconciler returns a reconciler reading and writing through c and publishing in
// store.
func NewPolicyReconciler(c client.Client, store *policy.Store, o ReconcilerOptions) *PolicyReconciler {
	return &PolicyReconciler{Client: c, store: store, opts: o, trigger: make(chan event.GenericEvent, 2)}
}

// +kubebuilder:rbac:groups=imagegate.io,resources=imagepolicies;clusterimagepolicies;imagepolicyexceptions,verbs=get;list;watch
// +kubebuilder:rbac:groups=imagegate.io,resources=imagepolicies/status;clusterimagepolicies/status;imagepolicyexceptions/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",namespace=imagegate-system,resources=secrets;configmaps,verbs=get;list;watch

// ReadyCheck fails until the first snapshot is built, so that no traffic reaches a webhook
// that does not know the policies yet.
func (r *PolicyReconciler) ReadyCheck(_ *http.Request) error {
	if r.store.Snapshot() == nil {
		return errors.New("policies not loaded yet")
	}
	return nil
}

// Reconcile rebuilds the snapshot and updates the status of every policy whose status is out
// of date.
func (r *PolicyReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	var cps v1alpha1.ClusterImagePolicyList
	if err := r.List(ctx, &cps); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing ClusterImagePolicies: %w", err)
	}
	var nps v1alpha1.ImagePolicyList
	if err := r.List(ctx, &nps); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing ImagePolicies: %w", err)
	}
	var exs v1alpha1.ImagePolicyExceptionList
	if err := r.List(ctx, &exs); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing ImagePolicyExceptions: %w", err)
	}
	snap := policy.CompileWith(cps.Items, nps.Items, policy.Options{Trust: r.opts.Trust, Exceptions: exs.Items, Now: r.opts.Now})
	gen := r.store.Publish(snap)
	r.opts.Metrics.Snapshot(gen, snap)
	log.V(1).Info("Compiled policies", "generation", gen, "clusterImagePolicies", len(cps.Items), "imagePolicies", len(nps.Items),
		"exceptions", len(exs.Items), "invalid", snap.Invalid())
	// Every replica rebuilds when an exception reaches its warning time or its expiry, so
	// that the metrics of each say so; the leader also writes the status.
	requeue := r.exceptionMetrics(snap, exs.Items)
	if !r.leader.Load() {
		return reconcile.Result{RequeueAfter: requeue}, nil
	}

	var plan *vap.Plan
	if r.opts.AdmissionPolicies {
		now := time.Now
		if r.opts.Now != nil {
			now = r.opts.Now
		}
		p := vap.Build(snap.NameRules(now()), vap.Options{})
		plan = &p
	}
	var errs []error
	for i := range cps.Items {
		p := &cps.Items[i]
		ref := policy.Ref{Kind: policy.KindClusterImagePolicy, Name: p.Name}
		errs = append(errs, r.writeStatus(ctx, p, &p.Status, snap, ref, plan))
	}
	for i := range nps.Items {
		p := &nps.Items[i]
		ref := policy.Ref{Kind: policy.KindImagePolicy, Namespace: p.Namespace, Name: p.Name}
		errs = append(errs, r.writeStatus(ctx, p, &p.Status, snap, ref, plan))
	}
	for i := range exs.Items {
		errs = append(errs, r.writeExceptionStatus(ctx, snap, &exs.Items[i]))
	}
	return reconcile.Result{RequeueAfter: requeue}, errors.Join(errs...)
}

// writeStatus sets the Ready condition of one policy, writing only when it changes.
func (r *PolicyReconciler) writeStatus(ctx context.Context, obj client.Object, status *v1alpha1.ImagePolicyStatus, snap *policy.Snapshot, ref policy.Ref, plan *vap.Plan) error {
	problem, warnings := snap.PolicyError(ref), snap.PolicyWarnings(ref)
	want := status.DeepCopy()
	cond := metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCompiled,
		Message: "the policy is in force", ObservedGeneration: obj.GetGeneration(),
	}
	if _, waiting := snap.AwaitingCleanAudit()[ref]; waiting {
		cond.Message = "the policy is in force, acting as Audit until an audit pass finds no running Pod that it would refuse (status.enforcement)"
	}
	if len(warnings) > 0 {
		cond.Message = text.Cut(cond.Message+"; warning: "+strings.Join(warnings, "; "), 30000) // the schema's maxLength is 32768
	}
	if problem != "" {
		cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha1.ReasonInvalid
		cond.Message = "the policy is invalid and refuses every Pod it may cover: " + problem
	}
	meta.SetStatusCondition(&want.Conditions, cond)
	if plan != nil {
		meta.SetStatusCondition(&want.Conditions, inAPIServer(plan, ref, obj.GetGeneration()))
	} else {
		meta.RemoveStatusCondition(&want.Conditions, v1alpha1.ConditionInAPIServer)
	}
	want.ObservedGeneration = obj.GetGeneration()
	if equality.Semantic.DeepEqual(want, status) {
		return nil
	}
	// A merge patch of what changed (the conditions and observedGeneration), so that the
	// audit's status.audit, written by another writer, is never overwritten with a cached copy.
	base := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	*status = *want
	if err := r.Status().Patch(ctx, obj, base); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil // deleted meanwhile; the delete event rebuilds the snapshot
		}
		return fmt.Errorf("patching the status of %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// inAPIServer is the InAPIServer condition of one policy under plan.
func inAPIServer(plan *vap.Plan, ref policy.Ref, generation int64) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionInAPIServer, ObservedGeneration: generation}
	if names, ok := plan.Compiled[ref]; ok {
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonAdmissionPolicy
		c.Message = "the kube-apiserver decides the name rules itself, with ValidatingAdmissionPolicy " + strings.Join(names, " and ") +
			"; the webhook is called only for images a verify rule may cover or that CEL does not normalize exactly"
		return c
	}
	if why, ok := plan.Webhook[ref]; ok {
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonWebhook
		c.Message = text.Cut("the webhook decides this policy's name rules, for every Pod it may cover: "+why, 30000)
		return c
	}
	c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonNoNameRules
	c.Message = "the policy has no name rule; its verify rules need the webhook"
	return c
}

// enforcementOf is a policy's status.enforcement (nil for anything else).
func enforcementOf(o client.Object) *v1alpha1.EnforcementStatus {
	switch p := o.(type) {
	case *v1alpha1.ClusterImagePolicy:
		return p.Status.Enforcement
	case *v1alpha1.ImagePolicy:
		return p.Status.Enforcement
	}
	return nil
}

// SetupWithManager registers the reconciler. Status writes do not change the generation, so
// they do not trigger a rebuild.
func (r *PolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toSnapshot := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{snapshotKey}
	})
	// The spec, and status.enforcement: the audit switching a policy that waited for a clean
	// audit to Enforce must reach every replica's snapshot.
	onSpec := builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !equality.Semantic.DeepEqual(enforcementOf(e.ObjectOld), enforcementOf(e.ObjectNew))
		},
	}))
	// One event at start builds the first snapshot even when there is no policy at all.
	r.trigger <- event.GenericEvent{Object: &v1alpha1.ClusterImagePolicy{}}
	if err := mgr.Add(leaderHook{r}); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("policy-snapshot").
		// Every replica needs the snapshot to serve the webhook, leader or not.
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		WatchesRawSource(source.Channel(r.trigger, toSnapshot)).
		Watches(&v1alpha1.ClusterImagePolicy{}, toSnapshot, onSpec).
		Watches(&v1alpha1.ImagePolicy{}, toSnapshot, onSpec).
		Watches(&v1alpha1.ImagePolicyException{}, toSnapshot, onSpec)
	if r.opts.TrustNamespace != "" {
		// Keys, trusted roots and pull secrets: a rotated key or a fixed Secret takes effect
		// (and a deleted one makes its policies refuse) without touching the policy.
		inNamespace := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.opts.TrustNamespace
		}))
		b = b.Watches(&corev1.Secret{}, toSnapshot, inNamespace).Watches(&corev1.ConfigMap{}, toSnapshot, inNamespace)
	}
	return b.Complete(r)
}

// Rebuild queues a rebuild of the snapshot (a KMS key was fetched or changed, say); it
// never blocks: a rebuild already queued covers this one.
func (r *PolicyReconciler) Rebuild() {
	select {
	case r.trigger <- event.GenericEvent{Object: &v1alpha1.ClusterImagePolicy{}}:
	default:
	}
}

// leaderHook runs only on the elected leader (or at once without leader election): it lets
// the reconciler write status from then on, and queues a rebuild that brings every status up
// to date.
type leaderHook struct{ r *PolicyReconciler }

func (h leaderHook) Start(ctx context.Context) error {
	h.r.leader.Store(true)
	select {
	case h.r.trigger <- event.GenericEvent{Object: &v1alpha1.ClusterImagePolicy{}}:
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}

func (leaderHook) NeedLeaderElection() bool { return true }
