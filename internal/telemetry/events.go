package telemetry

import (
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Event reasons on a policy.
const (
	ReasonDenied     = "Denied"
	ReasonWarned     = "Warned"
	ReasonBreakGlass = "BreakGlass"
	// ReasonRunningImageRefused is on a Pod whose running image the audit found failing a
	// verify rule (its scan aged past maxAge, new findings, a signature gone, another digest).
	ReasonRunningImageRefused = "RunningImageRefused"
)

// maxNote keeps an Event's note under the 1 kB the events API accepts.
const maxNote = 1000

// Events records Kubernetes Events on the policies that deny or warn, at most one per policy
// and reason per interval: a crash-looping ReplicaSet retrying a refused Pod every few seconds
// yields one Event a minute, whose note counts the others. The recorder sends asynchronously
// (and aggregates repeats into a series), so the admission path never waits on the apiserver.
type Events struct {
	recorder events.EventRecorder
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[eventKey]*window
}

type eventKey struct {
	policy policy.Ref
	reason string
}

type window struct {
	at         time.Time
	suppressed int
}

// NewEvents returns an Events that emits through recorder at most once per interval per
// policy and reason.
func NewEvents(recorder events.EventRecorder, interval time.Duration) *Events {
	return &Events{recorder: recorder, interval: interval, now: time.Now, last: map[eventKey]*window{}}
}

// Object names what a decision was about, for Event notes. The name is only put together when
// an Event goes out, so an admission that makes none spends nothing on it.
type Object struct {
	Kind, Namespace, Name string
	// GenerateName stands in for Name when the apiserver has yet to generate it.
	GenerateName string
	// DryRun says the request persists nothing (kubectl --dry-run=server). The webhooks
	// declare sideEffects: None, so a dry run leaves no Event and is counted apart from the
	// decisions about real objects.
	DryRun bool
}

// String is "Kind namespace/name", "Kind namespace/generateName*", or, when neither name is
// known (an ImageReview), "Kind in namespace namespace".
func (o Object) String() string {
	switch {
	case o.Name != "":
		return o.Kind + " " + o.Namespace + "/" + o.Name
	case o.GenerateName != "":
		return o.Kind + " " + o.Namespace + "/" + o.GenerateName + "*"
	default:
		return o.Kind + " in namespace " + o.Namespace
	}
}

// Decision emits the Events of one decision about object.
func (e *Events) Decision(object Object, snap *policy.Snapshot, d *policy.Decision) {
	if e == nil || len(d.Violations) == 0 {
		return
	}
	for i := range d.Violations {
		v := &d.Violations[i]
		reason := ""
		switch {
		case v.BreakGlass:
			reason = ReasonBreakGlass
		case v.Mode == v1alpha1.ModeEnforce:
			reason = ReasonDenied
		case v.Mode == v1alpha1.ModeWarn:
			reason = ReasonWarned
		default:
			continue // Audit mode records silently: annotations, metrics and status only.
		}
		if !d.FirstOfPolicy(i) {
			continue
		}
		suppressed, ok := e.allow(eventKey{v.Policy, reason})
		if !ok {
			continue
		}
		// The object's names come from the request (an ImageReview's namespace is whatever the
		// caller sent): printable, as the message is.
		note := policy.Printable(object.String()) + ": " + v.Message()
		if suppressed > 0 {
			note = fmt.Sprintf("%s (and %d more since the last event)", note, suppressed)
		}
		if len(note) > maxNote {
			note = strings.ToValidUTF8(note[:maxNote-3], "") + "..."
		}
		e.recorder.Eventf(policyObject(v.Policy, snap), nil, corev1.EventTypeWarning, reason, "Admission", "%s", note)
	}
}

// Running emits, on the Pod, that the audit found an image it runs failing a policy's verify
// rule; at most once per Pod, container and policy per interval. running is the digest the
// container runs (its imageID's), said in the note because the tag may name another by now.
func (e *Events) Running(pod metav1.Object, snap *policy.Snapshot, v *policy.Violation, running string) {
	if e == nil {
		return
	}
	if _, ok := e.allow(eventKey{v.Policy, ReasonRunningImageRefused + "/" + string(pod.GetUID()) + "/" + v.Container}); !ok {
		return
	}
	note := "container " + policy.Printable(v.Container)
	if running != "" {
		note += " (running " + running + ")"
	}
	note += ": " + v.Message()
	if len(note) > maxNote {
		note = strings.ToValidUTF8(note[:maxNote-3], "") + "..."
	}
	ref := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: pod.GetName(), Namespace: pod.GetNamespace(), UID: pod.GetUID()}}
	e.recorder.Eventf(ref, policyObject(v.Policy, snap), corev1.EventTypeWarning, ReasonRunningImageRefused, "Audit", "%s", note)
}

// allow reports whether an Event may go out now, and how many were held back before it.
func (e *Events) allow(k eventKey) (int, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	w, seen := e.last[k]
	if seen && now.Sub(w.at) < e.interval {
		w.suppressed++
		return 0, false
	}
	suppressed := 0
	if seen {
		suppressed = w.suppressed
	}
	e.last[k] = &window{at: now}
	if len(e.last) > 10000 {
		e.forgetOld(now)
	}
	return suppressed, true
}

// forgetOld drops the windows that have ended, so that deleted policies do not pile up.
func (e *Events) forgetOld(now time.Time) {
	for k, w := range e.last {
		if now.Sub(w.at) >= e.interval {
			delete(e.last, k)
		}
	}
}

// policyObject is the object an Event is about: the policy, with its UID so that kubectl
// describe finds the Event.
func policyObject(ref policy.Ref, snap *policy.Snapshot) runtime.Object {
	meta := metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace, UID: snap.UID(ref)}
	if ref.Kind == policy.KindImagePolicy {
		return &v1alpha1.ImagePolicy{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: ref.Kind}, ObjectMeta: meta}
	}
	return &v1alpha1.ClusterImagePolicy{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: ref.Kind}, ObjectMeta: meta}
}

// Recorder is what the admission endpoints record a decision with: metrics and Events.
type Recorder struct {
	Metrics *Metrics
	Events  *Events
}

// Decided records one decision about object, taken with snap in elapsed.
func (r *Recorder) Decided(endpoint Endpoint, object Object, snap *policy.Snapshot, d *policy.Decision, elapsed time.Duration) {
	if r == nil {
		return
	}
	if object.DryRun {
		r.Metrics.DryRun(endpoint, d, elapsed)
		return
	}
	r.Metrics.Decision(endpoint, d, elapsed)
	r.Events.Decision(object, snap, d)
}
