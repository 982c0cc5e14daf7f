package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

// Reasons of an exception's Active condition and of its Events, besides those of the API.
const (
	// ReasonExpiringSoon: active, and expiring within the warning time.
	ReasonExpiringSoon = "ExpiringSoon"
	// ReasonInvalid: the exception does not compile and exempts nothing.
	ReasonInvalid = "Invalid"
	// EventExceptionExpired and EventExceptionExpiringSoon are Event reasons on exceptions.
	EventExceptionExpired      = "ExceptionExpired"
	EventExceptionExpiringSoon = "ExceptionExpiringSoon"
)

// defaultExpiryWarning is how long before its expiry an exception is said to expire soon.
const defaultExpiryWarning = 72 * time.Hour

func (r *PolicyReconciler) now() time.Time {
	if r.opts.Now != nil {
		return r.opts.Now()
	}
	return time.Now()
}

func (r *PolicyReconciler) expiryWarning() time.Duration {
	if r.opts.ExpiryWarning > 0 {
		return r.opts.ExpiryWarning
	}
	return defaultExpiryWarning
}

// exceptionState is an exception's Active condition at now.
func (r *PolicyReconciler) exceptionState(snap *policy.Snapshot, ex *v1alpha1.ImagePolicyException, now time.Time) metav1.Condition {
	ref := policy.Ref{Kind: policy.KindImagePolicyException, Namespace: ex.Namespace, Name: ex.Name}
	c := metav1.Condition{Type: v1alpha1.ConditionActive, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonActive, ObservedGeneration: ex.Generation}
	expires := ex.Spec.ExpiresAt
	switch forbidden := snap.ExceptionForbidden(ref); {
	case snap.ExceptionError(ref) != "":
		c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalid
		c.Message = "the exception is invalid and exempts nothing: " + snap.ExceptionError(ref)
	case expires != nil && !now.Before(expires.Time):
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonExpired
		c.Message = "expired at " + expires.UTC().Format(time.RFC3339) + ": the Pods and images it named are checked again"
	case len(forbidden) == len(ex.Spec.Policies):
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonForbidden
		c.Message = "every policy it names sets allowExceptions: false: " + refList(forbidden)
	default:
		c.Message = "applies with no expiry"
		if expires != nil {
			c.Message = "applies until " + expires.UTC().Format(time.RFC3339)
			if expires.Sub(now) <= r.expiryWarning() {
				c.Reason = ReasonExpiringSoon
				c.Message = "expires at " + expires.UTC().Format(time.RFC3339) + ", within " + r.expiryWarning().String()
			}
		}
		if len(forbidden) > 0 {
			c.Message += "; not for " + refList(forbidden) + ", which set allowExceptions: false"
		}
		if missing := snap.ExceptionMissing(ref); len(missing) > 0 {
			c.Message += "; no such policy: " + refList(missing) + " (nothing is exempt from it until it exists)"
		}
		if unused := snap.ExceptionBreakGlassUnused(ref); len(unused) > 0 {
			c.Message += "; allowBreakGlass changes nothing for " + refList(unused) + ", which do not set allowBreakGlass with breakGlassRequiresException"
		}
	}
	return c
}

func refList(refs []policy.Ref) string {
	var s []string
	for _, r := range refs {
		s = append(s, fmt.Sprintf("%s %q", r.Kind, r.Name))
	}
	return strings.Join(s, ", ")
}

// exceptionMetrics records the exceptions' states and expiries, and returns when the next one
// reaches its warning time or its expiry (0: none pending).
func (r *PolicyReconciler) exceptionMetrics(snap *policy.Snapshot, exs []v1alpha1.ImagePolicyException) time.Duration {
	now := r.now()
	states := map[string]int{}
	expiries := map[string]time.Time{}
	var next time.Duration
	at := func(t time.Time) {
		if d := t.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for i := range exs {
		ex := &exs[i]
		c := r.exceptionState(snap, ex, now)
		states[c.Reason]++
		if e := ex.Spec.ExpiresAt; e != nil {
			expiries[ex.Namespace+"/"+ex.Name] = e.Time
			at(e.Time)
			at(e.Add(-r.expiryWarning()))
		}
	}
	r.opts.Metrics.Exceptions(states, expiries)
	if next > 0 {
		next += 100 * time.Millisecond // past the instant, not just before it
	}
	return next
}

// writeExceptionStatus sets an exception's Active condition, writing only when it changes,
// with an Event when it starts to expire soon and when it has expired.
func (r *PolicyReconciler) writeExceptionStatus(ctx context.Context, snap *policy.Snapshot, ex *v1alpha1.ImagePolicyException) error {
	cond := r.exceptionState(snap, ex, r.now())
	old := meta.FindStatusCondition(ex.Status.Conditions, v1alpha1.ConditionActive)
	want := ex.Status.DeepCopy()
	meta.SetStatusCondition(&want.Conditions, cond)
	if equality.Semantic.DeepEqual(want, &ex.Status) {
		return nil
	}
	base := client.MergeFrom(ex.DeepCopy())
	ex.Status = *want
	if err := r.Status().Patch(ctx, ex, base); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil
		}
		return fmt.Errorf("patching the status of ImagePolicyException %s: %w", client.ObjectKeyFromObject(ex), err)
	}
	if r.opts.Events != nil && (old == nil || old.Reason != cond.Reason) {
		obj := &v1alpha1.ImagePolicyException{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: policy.KindImagePolicyException},
			ObjectMeta: metav1.ObjectMeta{Name: ex.Name, Namespace: ex.Namespace, UID: ex.UID},
		}
		switch cond.Reason {
		case v1alpha1.ReasonExpired:
			r.opts.Events.Eventf(obj, nil, corev1.EventTypeWarning, EventExceptionExpired, "Expire", "%s", cond.Message)
		case ReasonExpiringSoon:
			r.opts.Events.Eventf(obj, nil, corev1.EventTypeWarning, EventExceptionExpiringSoon, "Expire", "%s", cond.Message)
		}
	}
	return nil
}
