package webhook

import (
	"context"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
)

// notLoaded is the refusal before the first snapshot: nothing is known to be allowed yet.
const notLoaded = "imagegate has not loaded its policies yet; retry in a few seconds"

// decider is what the Pod, workload and ImageReview endpoints share once they have built a
// Subject: the current snapshot, the namespace's labels when a policy needs them, the engine,
// telemetry and a log line.
type decider struct {
	snapshots  policy.Source
	namespaces client.Reader
	recorder   *telemetry.Recorder
	endpoint   telemetry.Endpoint
	verifier   verify.Checker
	// podCredentials, when set (--pull-secrets-from-pods), adds each Pod's own pull secrets
	// to the registry credentials of its verification.
	podCredentials *verify.PodCredentials
}

// SetPodCredentials makes verifications use each Pod's imagePullSecrets and its
// ServiceAccount's too.
func (x *decider) SetPodCredentials(p *verify.PodCredentials) { x.podCredentials = p }

// registry returns verify.Steps.Registry for a request of namespace: its lookups count
// against the namespace's quota, and carry the Pod's pull secrets when that is on. Decide
// asks only when a registry call is due (no apiserver call otherwise). A Secret that cannot
// be read is logged and left out: a registry that needs it refuses, with its own error.
func (x *decider) registry(namespace string, pod *corev1.Pod) func(context.Context) context.Context {
	return func(ctx context.Context) context.Context {
		ctx = verify.WithNamespace(ctx, namespace)
		if x.podCredentials == nil || pod == nil {
			return ctx
		}
		out, err := x.podCredentials.WithPod(ctx, namespace, pod.Spec.ServiceAccountName, pod.Spec.ImagePullSecrets)
		if err != nil {
			logf.FromContext(ctx).Info("Pod pull secrets not used", "namespace", namespace, "pod", pod.Name, "reason", err.Error())
			return ctx
		}
		return out
	}
}

// SetVerifier sets what checks verify rules. Without one, every image a verify rule covers
// is refused (fail closed, with verify.Unavailable).
func (x *decider) SetVerifier(v verify.Checker) { x.verifier = v }

// decide evaluates sub about object; pod, when the subject is one, lends its pull secrets to
// the verifications (see SetPodCredentials). ok is false before the first snapshot; callers
// refuse then (fail closed).
func (x *decider) decide(ctx context.Context, sub *policy.Subject, object telemetry.Object, pod *corev1.Pod) (d policy.Decision, ok bool) {
	snap := x.snapshots.Snapshot()
	if snap == nil {
		return d, false
	}
	start := time.Now()
	x.namespaceOf(ctx, snap, sub)
	steps := verify.Steps{Verify: true}
	if snap.Verifies() {
		// Only then can there be registry work; the closure would cost every request.
		steps.Registry = x.registry(sub.Namespace, pod)
	}
	d = verify.Decide(ctx, snap, sub, x.verifier, steps).Decision
	x.recorder.Decided(x.endpoint, object, snap, &d, time.Since(start))
	if log := logf.FromContext(ctx).V(1); log.Enabled() {
		log.Info("Decided", "endpoint", x.endpoint, "object", object.String(), "decision", d.Outcome(),
			"policies", d.Covered, "images", len(sub.Images), "violations", len(d.Violations))
	}
	return d, true
}

// namespaceOf sets sub's namespace labels when a policy of snap selects namespaces (only
// then: the lookup copies the object out of the cache).
func (x *decider) namespaceOf(ctx context.Context, snap *policy.Snapshot, sub *policy.Subject) {
	if sub.NothingToCheck() || !snap.SelectsNamespaces() {
		return
	}
	if sub.Namespace == "" {
		sub.NamespaceUnknown = true
		return
	}
	sub.NamespaceLabels, sub.NamespaceUnknown = namespaceLabels(ctx, x.namespaces, sub.Namespace)
}

// admissionResponse is a decision as a webhook answer: denied with every Enforce message,
// Warn messages as warnings, and the audit annotations.
func admissionResponse(d *policy.Decision) admission.Response {
	resp := admission.Allowed("")
	if !d.Allowed() {
		resp = admission.Denied(d.DenialMessage())
	}
	resp.Warnings = d.WarningMessages()
	if d.VerifyDeferred {
		resp.Warnings = append(resp.Warnings, verifyDeferred)
	}
	resp.Warnings = append(resp.Warnings, d.ExemptionMessages()...)
	resp.Warnings = append(resp.Warnings, d.NoteMessages()...)
	resp.AuditAnnotations = d.AuditAnnotations()
	return resp
}

// verifyDeferred is the warning on a workload whose images verify rules cover.
const verifyDeferred = "imagegate verifies the signatures of this template's images when its Pods are created, and pins their tags to digests then"

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
// AdmissionReview at once and gives up after the webhook's timeout (timeoutSeconds: 15, what
// verifying signatures in a slow registry may take; without verify rules an answer takes
// well under a millisecond).
const RequestDeadline = 16 * time.Second

// BoundRequest sets read and write deadlines on the connection of each request to h, and
// gives the request a context that ends before the apiserver gives up on it (see
// requestBudget), so that registry calls end with a clear refusal in time.
func BoundRequest(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestBudget(r, d))
		defer cancel()
		r = r.WithContext(ctx)
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(d)
		// Not every ResponseWriter supports deadlines (a test recorder does not): no bound then.
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
		h.ServeHTTP(w, r)
	})
}

// answerMargin is the time kept, of the apiserver's timeout, to write the answer.
const answerMargin = 500 * time.Millisecond

// requestBudget is how long a request may work: the timeout the apiserver sends
// (`?timeout=15s`, the webhook's timeoutSeconds) less answerMargin, or fallback less the
// margin when it sends none (ImagePolicyWebhook, tests).
func requestBudget(r *http.Request, fallback time.Duration) time.Duration {
	budget := fallback
	if t, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && t > 0 && t < fallback {
		budget = t
	}
	budget -= answerMargin
	if budget < answerMargin {
		budget = answerMargin
	}
	return budget
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
