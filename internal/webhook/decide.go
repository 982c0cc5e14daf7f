package webhook

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
)

// notLoaded is the refusal before the first snapshot: nothing is known to be allowed yet.
const notLoaded = "imagegate has not loaded its policies yet; retry in a few seconds"

// decider is what the Pod, workload and ImageReview endpoints share once they have built a
// Subject: the current snapshot, the namespace's labels when a policy needs them, the engine,
// telemetry and a log line.
type decider struct {
	snapshots  SnapshotSource
	namespaces client.Reader
	recorder   *telemetry.Recorder
	endpoint   telemetry.Endpoint
}

// decide evaluates sub about object. ok is false before the first snapshot; callers refuse
// then (fail closed).
func (x *decider) decide(ctx context.Context, sub *policy.Subject, object telemetry.Object) (d policy.Decision, ok bool) {
	snap := x.snapshots.Snapshot()
	if snap == nil {
		return d, false
	}
	start := time.Now()
	if !sub.NothingToCheck() && snap.SelectsNamespaces() {
		// Only then: the lookup copies the object out of the cache.
		if sub.Namespace == "" {
			sub.NamespaceUnknown = true
		} else {
			sub.NamespaceLabels, sub.NamespaceUnknown = namespaceLabels(ctx, x.namespaces, sub.Namespace)
		}
	}
	d = snap.Evaluate(sub)
	x.recorder.Decided(x.endpoint, object, snap, &d, time.Since(start))
	if log := logf.FromContext(ctx).V(1); log.Enabled() {
		log.Info("Decided", "endpoint", x.endpoint, "object", object.String(), "decision", d.Outcome(),
			"policies", d.Covered, "images", len(sub.Images), "violations", len(d.Violations))
	}
	return d, true
}

// admissionResponse is a decision as a webhook answer: denied with every Enforce message,
// Warn messages as warnings, and the audit annotations.
func admissionResponse(d *policy.Decision) admission.Response {
	resp := admission.Allowed("")
	if !d.Allowed() {
		resp = admission.Denied(strings.Join(d.Messages(imagegatev1alpha1.ModeEnforce), "\n"))
	}
	resp.Warnings = d.Messages(imagegatev1alpha1.ModeWarn)
	resp.AuditAnnotations = d.AuditAnnotations()
	return resp
}

// register serves h at path on the manager's webhook server, bounded by RequestDeadline.
func register(server ctrlwebhook.Server, path string, h http.Handler) {
	server.Register(path, BoundRequest(h, RequestDeadline))
}

// requestLogger is the per-request logger of the admission webhooks: controller-runtime's
// default (the object, resource, user and request ID as values) when verbose logging is on,
// else the base logger. Those values cost a zap logger clone per request, measured at 9% of
// the manager's CPU under load, for lines that at the default verbosity are never written.
func requestLogger(base logr.Logger, req *admission.Request) logr.Logger {
	if base.V(1).Enabled() {
		return admission.DefaultLogConstructor(base, req)
	}
	return base
}

// RequestDeadline bounds how long a client may take to send a request body and read the
// answer: the server's own settings bound only the headers (32 s), so a client trickling its
// body (slowloris) could otherwise hold a connection forever. The apiserver sends a whole
// AdmissionReview at once and gives up after the webhook's timeout (5 s).
const RequestDeadline = 10 * time.Second

// BoundRequest sets read and write deadlines on the connection of each request to h.
func BoundRequest(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(d)
		// Not every ResponseWriter supports deadlines (a test recorder does not): no bound then.
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
		h.ServeHTTP(w, r)
	})
}

// namespaceLookupTimeout bounds the wait for a Namespace from the cache: the cache blocks
// until its informer has synced, and an apiserver that is slow to answer the watch must not
// make the webhook miss its own deadline (5 s). Past it, policies that select namespaces
// refuse with "retry", others decide normally.
const namespaceLookupTimeout = time.Second

func namespaceLabels(ctx context.Context, namespaces client.Reader, name string) (map[string]string, bool) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	ctx, cancel := context.WithTimeout(ctx, namespaceLookupTimeout)
	defer cancel()
	if err := namespaces.Get(ctx, types.NamespacedName{Name: name}, ns); err != nil {
		logf.FromContext(ctx).V(1).Info("Namespace labels unknown", "namespace", name, "reason", err.Error())
		return nil, true
	}
	return ns.Labels, false
}
