package webhook

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/attest"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/preflight"
	"github.com/imagegate/imagegate/internal/verify"
)

// PreflightWebhookPath is where a change of an ImagePolicy or ClusterImagePolicy is answered
// with what it would refuse among the running Pods (config/webhook/preflight_webhook.yaml
// registers it, failurePolicy Ignore: it never blocks a change).
const PreflightWebhookPath = "/preflight-imagepolicy"

// PreflightTimeout bounds the work of one preflight, well within the webhook's timeout
// (timeoutSeconds: 5): past it the change is admitted with a warning that says so.
const PreflightTimeout = 3 * time.Second

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Preflight answers each CREATE or UPDATE of a policy with warnings: the running Pods the new
// version would refuse at their next creation, counted by namespace, the first ones named
// with their first reason. It always admits. Pods come from the manager's cache (each
// replica keeps the running Pods, trimmed); verify rules are answered from what the
// verifier already found (verify.Verifier.Known), never from a registry. It names only Pods
// that the requester may list.
type Preflight struct {
	// Cache lists Namespaces and ImagePolicyExceptions.
	Cache client.Reader
	// Pods lists the running Pods of a namespace (the manager's podcache.Cache).
	Pods PodLister
	// Client creates the SubjectAccessReviews that say whose Pods the requester may list.
	Client client.Client
	// Trust compiles the policy's verify section, as the reconciler does.
	Trust policy.TrustCompiler
	// Known answers verify rules from what is already known; nil: not verified yet.
	Known verify.Checker
	// Excluded namespaces are not judged, as the webhook does not cover them.
	Excluded []string
	// Timeout bounds one preflight; zero: PreflightTimeout.
	Timeout time.Duration
	// Warn turns the preflight's warnings on (--policy-preflight); off, the webhook only
	// checks the CEL conditions, and needs none of the fields above.
	Warn bool

	decoder admission.Decoder
}

// SetupPreflightWebhookWithManager registers the preflight on the manager's server.
func SetupPreflightWebhookWithManager(mgr ctrl.Manager, p *Preflight) {
	p.decoder = admission.NewDecoder(mgr.GetScheme())
	register(mgr.GetWebhookServer(), PreflightWebhookPath, &ctrlwebhook.Admission{LogConstructor: requestLogger, Handler: p})
}

// Handle judges one policy change. It refuses only a policy whose CEL conditions do not
// compile or may cost too much, as the kube-apiserver refuses such CEL in a CRD; else it
// admits, with the preflight's warnings when Warn is on.
func (p *Preflight) Handle(ctx context.Context, req admission.Request) admission.Response {
	if why := p.refusal(req); why != "" {
		return admission.Denied(why)
	}
	resp := admission.Allowed("")
	if !p.Warn {
		return resp
	}
	warnings, err := p.warnings(ctx, req)
	if err != nil {
		warnings = []string{"imagegate could not tell which running Pods this policy would refuse: " + err.Error() + " (imagegate check --cluster --running answers from outside)"}
	}
	resp.Warnings = warnings
	logf.FromContext(ctx).V(1).Info("Preflight", "kind", req.Kind.Kind, "name", req.Name, "warnings", len(warnings))
	return resp
}

// refusal says why the policy's CEL conditions cannot be stored ("" when they can, or when
// the request is not a policy the decoder reads: the API's own validation answers those).
func (p *Preflight) refusal(req admission.Request) string {
	var spec *v1alpha1.ImagePolicySpec
	switch req.Kind.Kind {
	case policy.KindClusterImagePolicy:
		var o v1alpha1.ClusterImagePolicy
		if p.decoder.Decode(req, &o) != nil {
			return ""
		}
		spec = &o.Spec
	case policy.KindImagePolicy:
		var o v1alpha1.ImagePolicy
		if p.decoder.Decode(req, &o) != nil {
			return ""
		}
		spec = &o.Spec
	default:
		return ""
	}
	for i := range spec.Verify.Attestations {
		if err := attest.CheckConditions(&spec.Verify.Attestations[i]); err != nil {
			var ce *attest.ConditionError
			if errors.As(err, &ce) {
				return fmt.Sprintf("spec.verify.attestations[%d].conditions[%d]: Invalid value: %s", i, ce.Index, ce.Err)
			}
			return fmt.Sprintf("spec.verify.attestations[%d]: %v", i, err)
		}
	}
	return ""
}

func (p *Preflight) warnings(ctx context.Context, req admission.Request) ([]string, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = PreflightTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var (
		ref     policy.Ref
		spec    *v1alpha1.ImagePolicySpec
		cluster []v1alpha1.ClusterImagePolicy
		inNs    []v1alpha1.ImagePolicy
	)
	switch req.Kind.Kind {
	case policy.KindClusterImagePolicy:
		cluster = make([]v1alpha1.ClusterImagePolicy, 1)
		if err := p.decoder.Decode(req, &cluster[0]); err != nil {
			return nil, err
		}
		ref, spec = policy.Ref{Kind: policy.KindClusterImagePolicy, Name: cluster[0].Name}, &cluster[0].Spec
	case policy.KindImagePolicy:
		inNs = make([]v1alpha1.ImagePolicy, 1)
		if err := p.decoder.Decode(req, &inNs[0]); err != nil {
			return nil, err
		}
		ref, spec = policy.Ref{Kind: policy.KindImagePolicy, Namespace: inNs[0].Namespace, Name: inNs[0].Name}, &inNs[0].Spec
	default:
		return nil, nil
	}
	if spec.Mode != "" && spec.Mode != v1alpha1.ModeEnforce {
		return nil, nil // it refuses nothing
	}
	// The policy alone, with the exceptions in force: its violations are the same as among
	// all the others.
	var exceptions v1alpha1.ImagePolicyExceptionList
	if err := p.Cache.List(ctx, &exceptions); err != nil {
		return nil, fmt.Errorf("listing the exceptions: %w", err)
	}
	snap := policy.CompileWith(cluster, inNs, policy.Options{Trust: p.Trust, Exceptions: exceptions.Items, AsWritten: true})
	judge := preflight.New(snap, ref, spec.Mode, spec.Enforcement == v1alpha1.EnforceAfterCleanAudit, p.Known)

	var namespaces metav1.PartialObjectMetadataList
	namespaces.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := p.Cache.List(ctx, &namespaces); err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	for i := range namespaces.Items {
		ns := &namespaces.Items[i]
		if slices.Contains(p.Excluded, ns.Name) || (ref.Namespace != "" && ns.Name != ref.Namespace) {
			continue
		}
		pods, err := p.Pods.Pods(ctx, ns.Name)
		if err != nil {
			return nil, fmt.Errorf("listing the Pods of %s: %w", ns.Name, err)
		}
		for _, pod := range pods {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("it took longer than %v", timeout)
			}
			if sub, ok := pod.Subject(ns.Labels); ok {
				judge.Add(ctx, &preflight.Pod{Namespace: ns.Name, Name: pod.Name, Subject: sub})
			}
		}
	}
	result := judge.Result()
	warnings := []string(nil)
	hidden, err := p.restrict(ctx, req, result)
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, result.Warnings(!isDryRun(&req.AdmissionRequest))...)
	if hidden {
		warnings = append(warnings, "Pods of namespaces where you may not list Pods are left out")
	}
	return warnings, nil
}

// restrict leaves out of result the namespaces whose Pods the requester may not list, and
// reports whether it left any out. One SubjectAccessReview when the requester may list Pods
// everywhere (or in the ImagePolicy's namespace); else one per namespace with a finding.
func (p *Preflight) restrict(ctx context.Context, req admission.Request, result *preflight.Result) (bool, error) {
	can := func(namespace string) (bool, error) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: req.UserInfo.Username, Groups: req.UserInfo.Groups, UID: req.UserInfo.UID,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "list", Resource: "pods"},
		}}
		if len(req.UserInfo.Extra) > 0 {
			sar.Spec.Extra = map[string]authorizationv1.ExtraValue{}
			for k, v := range req.UserInfo.Extra {
				sar.Spec.Extra[k] = authorizationv1.ExtraValue(v)
			}
		}
		if err := p.Client.Create(ctx, sar); err != nil {
			return false, fmt.Errorf("asking whether %s may list Pods: %w", req.UserInfo.Username, err)
		}
		return sar.Status.Allowed, nil
	}
	if ok, err := can(result.Policy.Namespace); err != nil || ok {
		return false, err
	}
	if result.Policy.Namespace != "" {
		hidden := len(result.Namespaces) > 0
		result.Keep(func(string) bool { return false })
		return hidden, nil
	}
	allowed := map[string]bool{}
	asked := 0
	for _, ns := range slices.Sorted(maps.Keys(result.Namespaces)) {
		found := result.Namespaces[ns]
		if len(found.Refused)+len(found.Unverified) == 0 || asked == preflightMaxReviews {
			continue
		}
		asked++
		ok, err := can(ns)
		if err != nil {
			return false, err
		}
		allowed[ns] = ok
	}
	hidden := false
	result.Keep(func(ns string) bool {
		// Covered counts of namespaces without findings say nothing about their Pods but
		// how many there are: left out too.
		if !allowed[ns] {
			hidden = true
		}
		return allowed[ns]
	})
	return hidden, nil
}

// preflightMaxReviews bounds the SubjectAccessReviews of one preflight: the namespaces past
// it are left out.
const preflightMaxReviews = 50

var _ admission.Handler = &Preflight{}

// PodLister lists the running Pods of a namespace.
type PodLister interface {
	Pods(ctx context.Context, namespace string) ([]*podspec.Running, error)
}

// isDryRun reports whether the request persists nothing.
func isDryRun(req *admissionv1.AdmissionRequest) bool { return req.DryRun != nil && *req.DryRun }
