package telemetry

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

func decision(t *testing.T, snap *policy.Snapshot, images ...string) policy.Decision {
	t.Helper()
	var imgs []policy.Image
	for i, img := range images {
		imgs = append(imgs, policy.Image{Field: "spec.containers[" + string(rune('0'+i)) + "].image", Ref: img})
	}
	return snap.Evaluate(&policy.Subject{Namespace: "a", Images: imgs})
}

func drain(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// A crash-looping ReplicaSet retries a refused Pod every few seconds: one Event per policy
// and reason per interval, the next one counting those held back.
func TestEventsAreRateLimitedPerPolicyAndReason(t *testing.T) {
	snap := policy.Compile([]v1alpha1.ClusterImagePolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "trusted", UID: "u1"}, Spec: v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "no-latest", UID: "u2"}, Spec: v1alpha1.ImagePolicySpec{Mode: v1alpha1.ModeWarn, Tags: v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "quiet", UID: "u3"}, Spec: v1alpha1.ImagePolicySpec{Mode: v1alpha1.ModeAudit, RequireDigest: ptr.To(true)}},
	}, nil)
	rec := events.NewFakeRecorder(100)
	now := time.Unix(1000, 0)
	e := NewEvents(rec, time.Minute)
	e.now = func() time.Time { return now }

	d := decision(t, snap, "quay.io/x/y:latest", "quay.io/x/z:1")
	e.Decision(Object{Kind: "Pod", Namespace: "a", Name: "p1"}, snap, &d)
	got := drain(rec)
	if len(got) != 2 {
		t.Fatalf("first decision: %d events, want one Denied (two images, one policy) and one Warned, none for Audit: %q", len(got), got)
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{
		`Warning Denied Pod a/p1: spec.containers[0].image: image "quay.io/x/y:latest" is not allowed by ClusterImagePolicy "trusted"`,
		`Warning Warned Pod a/p1: spec.containers[0].image: image "quay.io/x/y:latest" is not allowed by ClusterImagePolicy "no-latest"`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("events %q lack %q", got, want)
		}
	}

	for i := 0; i < 30; i++ {
		now = now.Add(time.Second)
		e.Decision(Object{Kind: "Pod", Namespace: "a", Name: "p2"}, snap, &d)
	}
	if got := drain(rec); len(got) != 0 {
		t.Errorf("within the interval: %d events, want 0: %q", len(got), got)
	}
	now = now.Add(time.Minute)
	e.Decision(Object{Kind: "Pod", Namespace: "a", Name: "p3"}, snap, &d)
	got = drain(rec)
	if len(got) != 2 || !strings.HasSuffix(got[0], "(and 30 more since the last event)") || !strings.HasSuffix(got[1], "(and 30 more since the last event)") {
		t.Errorf("after the interval: %q", got)
	}
}

func TestEventNotesStayUnderTheAPILimit(t *testing.T) {
	snap := policy.Compile([]v1alpha1.ClusterImagePolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "trusted"}, Spec: v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}}}},
	}, nil)
	rec := events.NewFakeRecorder(10)
	d := decision(t, snap, "quay.io/x/"+strings.Repeat("a", 2000)+":1")
	NewEvents(rec, time.Minute).Decision(Object{Kind: "Pod", Namespace: "a", Name: "p"}, snap, &d)
	got := drain(rec)
	if len(got) != 1 || len(got[0]) > maxNote+len("Warning Denied ") || !strings.HasSuffix(got[0], "...") {
		t.Errorf("%d events, first %d bytes", len(got), len(got[0]))
	}
}

func TestNilRecorderRecordsNothing(t *testing.T) {
	var r *Recorder
	d := policy.Decision{}
	r.Decided(EndpointPod, Object{Kind: "Pod", Namespace: "a", Name: "p"}, nil, &d, time.Millisecond)
	var m *Metrics
	m.Decision(EndpointPod, &d, time.Millisecond)
	m.Audit(nil, 0, time.Now(), 0)
	var e *Events
	e.Decision(Object{}, nil, &d)
}

func TestObjectNames(t *testing.T) {
	for _, tc := range []struct {
		o    Object
		want string
	}{
		{Object{Kind: "Pod", Namespace: "a", Name: "web"}, "Pod a/web"},
		{Object{Kind: "Pod", Namespace: "a", GenerateName: "web-7d9f-"}, "Pod a/web-7d9f-*"},
		{Object{Kind: "Pod", Namespace: "a"}, "Pod in namespace a"},
	} {
		if got := tc.o.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.o, got, tc.want)
		}
	}
}
