package webhook

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
)

// PinWebhookPath is where the mutating webhook that pins verified tags is served.
const PinWebhookPath = "/mutate-v1-pod"

// PodPinner is the mutating webhook that makes a Pod run exactly the bytes that its verify
// rules check: each image named by tag that a verify rule covers is resolved to the digest
// the tag names now and rewritten to `tag@digest`. The validating webhook, which runs after
// every mutation, then verifies the signature at that digest and refuses any tag that is
// still not pinned, so nothing unverified is admitted even if this webhook is skipped.
//
// It decides nothing else: name rules are the validating webhook's. Images that a policy
// requiring digests covers are never pinned (the writer must pin them).
type PodPinner struct {
	decider
}

// NewPodPinner returns a PodPinner.
func NewPodPinner(snapshots policy.Source, namespaces client.Reader, recorder *telemetry.Recorder, v verify.Checker) *PodPinner {
	p := &PodPinner{decider: decider{snapshots: snapshots, namespaces: namespaces, recorder: recorder, endpoint: telemetry.EndpointPod}}
	p.SetVerifier(v)
	return p
}

// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods;pods/ephemeralcontainers,verbs=create;update,versions=v1,name=pin.pods.imagegate.io,admissionReviewVersions=v1,matchPolicy=Equivalent,timeoutSeconds=15,reinvocationPolicy=IfNeeded

// SetupPinWebhookWithManager registers the mutating webhook on the manager's webhook server.
func SetupPinWebhookWithManager(mgr ctrl.Manager, snapshots policy.Source, recorder *telemetry.Recorder, v verify.Checker, pc *verify.PodCredentials) {
	h := NewPodPinner(snapshots, mgr.GetCache(), recorder, v)
	h.SetPodCredentials(pc)
	register(mgr.GetWebhookServer(), PinWebhookPath, &ctrlwebhook.Admission{LogConstructor: requestLogger, Handler: h})
}

// Handle pins one request's images.
func (p *PodPinner) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Resource != podResource || (req.SubResource != "" && req.SubResource != "ephemeralcontainers") {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("imagegate pins pods and pods/ephemeralcontainers, not %s", resourceName(req)))
	}
	if req.UID == "" {
		return admission.Errored(http.StatusBadRequest, errNoUID)
	}
	snap := p.snapshots.Snapshot()
	if snap == nil {
		return admission.Denied(notLoaded)
	}
	if !snap.Verifies() || (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) {
		return admission.Allowed("") // the common case: no verify rule anywhere, nothing decoded
	}
	pod, sub, errResp := podSubject(req)
	if errResp != nil {
		return *errResp
	}
	p.namespaceOf(ctx, snap, &sub)
	r := verify.Decide(ctx, snap, &sub, p.verifier, verify.Steps{Pin: true, Registry: p.registry(sub.Namespace, pod)})
	resp := admission.Allowed("")
	for _, pin := range r.Pins {
		u := pin.Unpinned
		if pin.Err != nil {
			msg := fmt.Sprintf("%s: image %q could not be pinned to a digest for %s %q: %s",
				u.Image.Field, u.Image.Ref, u.Rule.Policy.Kind, u.Rule.Policy.Name, policy.Printable(pin.Err.Error()))
			if u.Enforce {
				return admission.Denied(msg)
			}
			resp.Warnings = append(resp.Warnings, msg)
			continue
		}
		resp.Patches = append(resp.Patches, jsonpatch.JsonPatchOperation{Operation: "replace", Path: jsonPointer(u.Image.Field), Value: u.Pinned(pin.Digest)})
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("%s: imagegate pinned %q to %s, the digest its tag names now, for %s %q",
			u.Image.Field, u.Image.Ref, pin.Digest, u.Rule.Policy.Kind, u.Rule.Policy.Name))
	}
	return resp
}

// jsonPointer turns a field path of podspec.PodImages (spec.containers[0].image,
// spec.volumes[2].image.reference) into a JSON patch path (/spec/containers/0/image).
func jsonPointer(field string) string {
	r := strings.NewReplacer(".", "/", "[", "/", "]", "")
	return "/" + r.Replace(field)
}
