package vap

import (
	"context"
	"fmt"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// costPolicies are n policies of the shape the benchmarks use (docs/benchmarks.md): allow
// the shared registry and the team's own, refuse the tag latest; every tenth also denies a
// digest and exempts a vendor image, so that every kind of rule is in the figures.
func costPolicies(n int) []v1alpha1.ClusterImagePolicy {
	out := make([]v1alpha1.ClusterImagePolicy, n)
	for i := range out {
		spec := v1alpha1.ImagePolicySpec{
			Images: v1alpha1.ImageRules{Allow: patterns("ghcr.io/acme/**", fmt.Sprintf("registry-%d.corp/**", i))},
			Tags:   v1alpha1.TagRules{Deny: tags("latest")},
		}
		if i%10 == 0 {
			spec.Images.Deny = patterns("ghcr.io/acme/legacy@sha256:" + fmt.Sprintf("%064x", i))
			spec.ExemptImages = patterns("ghcr.io/vendor/agent")
		}
		out[i] = cluster(fmt.Sprintf("p-%04d", i), spec)
	}
	return out
}

// costPod has n containers, each with an image every policy must normalize and match.
func costPod(n int) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "ns"}}
	for i := range n {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: fmt.Sprintf("ghcr.io/acme/team-%d/app-%d:1.%d", i%7, i, i)})
	}
	return p
}

// costMeter evaluates one generated policy as the apiserver's validator does, validations
// and then message expressions (which it evaluates for every request, passed or not), from
// one budget (cost says how much of the per-binding budget, celconfig.RuntimeCELCostBudget,
// both used).
type costMeter struct {
	filter, messages plugincel.ConditionEvaluator
}

func newCostMeter(t testing.TB, p *admissionregistrationv1.ValidatingAdmissionPolicy) *costMeter {
	t.Helper()
	c, opts := variablesCompiler(t, p)
	var exprs, messages []plugincel.ExpressionAccessor
	for _, v := range p.Spec.Validations {
		exprs = append(exprs, &validating.ValidationCondition{Expression: v.Expression})
		messages = append(messages, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
	}
	return &costMeter{filter: c.CompileCondition(exprs, opts, environment.StoredExpressions),
		messages: c.CompileCondition(messages, plugincel.OptionalVariableDeclarations{}, environment.StoredExpressions)}
}

func (m *costMeter) cost(t testing.TB, pod *corev1.Pod) int64 {
	va := attributes(pod, nil)
	req := plugincel.CreateAdmissionRequest(va.Attributes, metav1.GroupVersionResource(podsGVR), metav1.GroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}))
	ns := plugincel.CreateNamespaceObject(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pod.Namespace}})
	remaining := int64(celconfig.RuntimeCELCostBudget)
	for _, f := range []plugincel.ConditionEvaluator{m.filter, m.messages} {
		res, left, err := f.ForInput(context.Background(), va, req, plugincel.OptionalVariableBindings{}, ns, remaining)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Error != nil {
				t.Fatal(r.Error)
			}
		}
		remaining = left
	}
	return celconfig.RuntimeCELCostBudget - remaining
}

func metersFor(t testing.TB, n int) []*costMeter {
	plan := costPlan(t, n)
	meters := make([]*costMeter, len(plan.Policies))
	for i := range plan.Policies {
		meters[i] = newCostMeter(t, &plan.Policies[i])
	}
	return meters
}

func costPlan(t testing.TB, n int) *Plan {
	snap := policy.Compile(costPolicies(n), nil)
	plan := Build(snap.NameRules(fixedNow), Options{})
	if len(plan.Webhook) > 0 {
		t.Fatalf("policies left to the webhook: %v", plan.Webhook)
	}
	return &plan
}

// TestCostWithinLimits holds the generated policies to the apiserver's limits at a Pod of 50
// containers: a full chunk (maxChunkPolicies policies share one object and one binding,
// whatever their number in all) within the runtime budget per binding (10,000,000), with room
// to spare. It logs what it measured.
func TestCostWithinLimits(t *testing.T) {
	meters := metersFor(t, maxChunkPolicies)
	if len(meters) != 1 {
		t.Fatalf("%d policies made %d objects, not one chunk", maxChunkPolicies, len(meters))
	}
	c := meters[0].cost(t, costPod(50))
	t.Logf("%d policies, 50 containers: cost %d of one binding's budget of %d (%.1f%%)", maxChunkPolicies, c, celconfig.RuntimeCELCostBudget,
		100*float64(c)/float64(celconfig.RuntimeCELCostBudget))
	if c > celconfig.RuntimeCELCostBudget/10 {
		t.Fatalf("a chunk costs %d at 50 containers: beyond a tenth of the apiserver's budget of %d, a Pod of 500 containers would fail closed", c, celconfig.RuntimeCELCostBudget)
	}
}

// BenchmarkAdmissionPolicies evaluates, per op, every generated policy on one Pod, as the
// apiserver does for one request (in process, with its CEL environment and cost tracking):
// the CPU one Pod costs the apiserver, and the CEL cost per request and per policy.
func BenchmarkAdmissionPolicies(b *testing.B) {
	for _, c := range []struct{ policies, containers int }{{1, 3}, {10, 5}, {100, 50}, {1000, 50}} {
		b.Run(fmt.Sprintf("policies=%d/containers=%d", c.policies, c.containers), func(b *testing.B) {
			plan := costPlan(b, c.policies)
			cs := compilePlan(b, plan)
			pod := costPod(c.containers)
			for b.Loop() {
				if out := evaluate(b, cs, pod, nil, nil); len(out.denied)+len(out.warnings)+len(out.audits) > 0 {
					b.Fatalf("the Pod is refused: %s", out)
				}
			}
			var total int64
			for i := range plan.Policies {
				total += newCostMeter(b, &plan.Policies[i]).cost(b, pod)
			}
			b.ReportMetric(float64(total), "cost/request")
			b.ReportMetric(float64(total)/float64(c.policies), "cost/policy")
		})
	}
}

// BenchmarkRequestParts splits the apiserver's CPU for one Pod of 3 containers in the mode
// (make bench's interleaved configuration: one policy allowing two registries and refusing
// the tag latest, one verify rule for other images) into its parts, next to the hand-written
// ValidatingAdmissionPolicy that make bench compares with (startsWith and endsWith on the
// image strings as written, with no normalization):
//   - generated: the generated ValidatingAdmissionPolicy, through the apiserver's validator
//     (its validations, then its message expressions, which it evaluates for every request);
//   - condition: the Pod webhook's match condition that the mode writes;
//   - hand-written: the hand-written policy, through the same validator.
func BenchmarkRequestParts(b *testing.B) {
	allow := cluster("bench", v1alpha1.ImagePolicySpec{
		Images: v1alpha1.ImageRules{Allow: patterns("ghcr.io/acme/**", "registry.corp:5000/**")},
		Tags:   v1alpha1.TagRules{Deny: tags("latest")},
	})
	verifying := cluster("verify", v1alpha1.ImagePolicySpec{Verify: v1alpha1.VerifyRules{
		Images:          patterns("quay.io/signed/**"),
		Signers:         []v1alpha1.Signer{{Name: "ci", Key: v1alpha1.KeySigner{PublicKey: "unused"}}},
		TransparencyLog: v1alpha1.TransparencyLogSkip,
	}})
	snap := policy.Compile([]v1alpha1.ClusterImagePolicy{allow, verifying}, nil)
	plan := Build(snap.NameRules(fixedNow), Options{})
	if len(plan.Policies) != 1 {
		b.Fatalf("%d generated policies, want 1", len(plan.Policies))
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}}
	for i, img := range []string{"ghcr.io/acme/web:1.4.2", "ghcr.io/acme/envoy:1.31", "registry.corp:5000/tools/agent:2"} {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprint("c", i), Image: img})
	}
	generated := compilePlan(b, &plan)
	handPlan := Plan{Policies: []admissionregistrationv1.ValidatingAdmissionPolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-images"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			Variables: []admissionregistrationv1.Variable{
				{Name: "repos", Expression: "['ghcr.io/acme/', 'registry.corp:5000/']"},
				{Name: "tags", Expression: "['latest']"},
			},
			Validations: []admissionregistrationv1.Validation{{Expression: `object.spec.containers.all(c, variables.repos.exists(r, c.image.startsWith(r)) && !variables.tags.exists(t, c.image.endsWith(':' + t))) &&
(!has(object.spec.initContainers) || object.spec.initContainers.all(c, variables.repos.exists(r, c.image.startsWith(r)) && !variables.tags.exists(t, c.image.endsWith(':' + t))))`}},
		},
	}}, Bindings: []admissionregistrationv1.ValidatingAdmissionPolicyBinding{bindingObject("bench-images", admissionregistrationv1.Deny, Options{})}}
	handWritten := compilePlan(b, &handPlan)
	condition := WebhookCondition(&plan, snap.PinScope())
	if webhookCalled(b, condition, pod, nil) {
		b.Fatal("the webhook is called for a Pod no verify rule covers")
	}
	matcher := newConditionMatcher(b, condition)
	pinMatcher := newConditionMatcher(b, podspec.PinCondition(snap.PinScope()))
	b.Run("generated", func(b *testing.B) {
		for b.Loop() {
			evaluate(b, generated, pod, nil, nil)
		}
	})
	b.Run("condition", func(b *testing.B) {
		va := attributes(pod, nil)
		for b.Loop() {
			matcher.Match(context.Background(), va, nil, nil)
		}
	})
	b.Run("pin-condition", func(b *testing.B) {
		va := attributes(pod, nil)
		for b.Loop() {
			pinMatcher.Match(context.Background(), va, nil, nil)
		}
	})
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			evaluate(b, handWritten, pod, nil, nil)
		}
	})
}
