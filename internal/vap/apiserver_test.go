package vap

import (
	"context"
	"fmt"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/utils/ptr"
)

// The kube-apiserver's own ValidatingAdmissionPolicy evaluation, in process: its CEL
// environment (environment.MustBaseEnvSet at its default compatibility version), its
// compiler for variables, validations and message expressions, and its per-call and
// per-request cost limits. Only what the dispatcher adds around it (which bindings match a
// request, the first denial's wording) is written here, after dispatcher.go.

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// compiled is one generated policy, compiled as the apiserver compiles it.
type compiled struct {
	policy    *admissionregistrationv1.ValidatingAdmissionPolicy
	binding   *admissionregistrationv1.ValidatingAdmissionPolicyBinding
	validator validating.Validator
	refs      []string // the imagegate policy of each validation
	nsSel     labels.Selector
	objSel    labels.Selector
}

// variablesCompiler is the apiserver's compiler with the policy's variables compiled and
// stored, as compilePolicy in its validating plugin does.
func variablesCompiler(t testing.TB, p *admissionregistrationv1.ValidatingAdmissionPolicy) (*plugincel.CompositedCompiler, plugincel.OptionalVariableDeclarations) {
	t.Helper()
	env := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	c, err := plugincel.NewCompositedCompiler(env)
	if err != nil {
		t.Fatal(err)
	}
	opts := plugincel.OptionalVariableDeclarations{HasAuthorizer: true}
	for _, v := range p.Spec.Variables {
		res := c.CompileAndStoreVariable(&validating.Variable{Name: v.Name, Expression: v.Expression}, opts, environment.StoredExpressions)
		if res.Error != nil {
			t.Fatalf("%s: variable %s does not compile: %v", p.Name, v.Name, res.Error)
		}
	}
	return c, opts
}

func compilePolicy(t testing.TB, p *admissionregistrationv1.ValidatingAdmissionPolicy) (validating.Validator, matchconditions.Matcher) {
	t.Helper()
	c, opts := variablesCompiler(t, p)
	var validations, messages []plugincel.ExpressionAccessor
	for _, v := range p.Spec.Validations {
		validations = append(validations, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message})
		messages = append(messages, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
	}
	var matcher matchconditions.Matcher
	if len(p.Spec.MatchConditions) > 0 {
		var mcs []plugincel.ExpressionAccessor
		for i := range p.Spec.MatchConditions {
			mcs = append(mcs, (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i]))
		}
		matcher = matchconditions.NewMatcher(c.CompileCondition(mcs, opts, environment.StoredExpressions), p.Spec.FailurePolicy, "policy", "validate", p.Name)
	}
	v := validating.NewValidator(
		c.CompileCondition(validations, opts, environment.StoredExpressions), matcher,
		c.CompileCondition(nil, opts, environment.StoredExpressions),
		c.CompileCondition(messages, plugincel.OptionalVariableDeclarations{}, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)
	if err := v.CompileError(); err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	return v, nil
}

func compilePlan(t testing.TB, plan *Plan) []compiled {
	t.Helper()
	byName := map[string]*admissionregistrationv1.ValidatingAdmissionPolicy{}
	for i := range plan.Policies {
		byName[plan.Policies[i].Name] = &plan.Policies[i]
	}
	var out []compiled
	for i := range plan.Bindings {
		b := &plan.Bindings[i]
		p := byName[b.Spec.PolicyName]
		v, _ := compilePolicy(t, p)
		nsSel, err := metav1.LabelSelectorAsSelector(b.Spec.MatchResources.NamespaceSelector)
		if err != nil {
			t.Fatal(err)
		}
		objSel := labels.Everything()
		if b.Spec.MatchResources.ObjectSelector != nil {
			if objSel, err = metav1.LabelSelectorAsSelector(b.Spec.MatchResources.ObjectSelector); err != nil {
				t.Fatal(err)
			}
		}
		var refs []string
		for _, r := range plan.Validations[p.Name] {
			refs = append(refs, r.String())
		}
		out = append(out, compiled{policy: p, binding: b, validator: v, refs: refs, nsSel: nsSel, objSel: objSel})
	}
	return out
}

// outcome is what the generated policies did with one request.
type outcome struct {
	denied   []string // "policy name: message", in binding order
	warnings []string
	audits   []string
}

func attributes(pod, old *corev1.Pod) *admission.VersionedAttributes {
	op := admission.Create
	if old != nil {
		op = admission.Update
	}
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	var a admission.Attributes
	if old != nil {
		a = admission.NewAttributesRecord(pod, old, gvk, pod.Namespace, pod.Name, podsGVR, "", op, &metav1.UpdateOptions{}, false, &user.DefaultInfo{Name: "test"})
	} else {
		a = admission.NewAttributesRecord(pod, nil, gvk, pod.Namespace, pod.Name, podsGVR, "", op, &metav1.CreateOptions{}, false, &user.DefaultInfo{Name: "test"})
	}
	va := &admission.VersionedAttributes{Attributes: a, VersionedKind: gvk, VersionedObject: admission.NewLazyObject(pod)}
	if old != nil {
		va.VersionedOldObject = admission.NewLazyObject(old)
	}
	return va
}

// evaluate runs every compiled policy whose binding matches the request, as the apiserver's
// dispatcher does (a binding matches when its namespaceSelector selects the namespace and its
// objectSelector the new or the old object).
func evaluate(t testing.TB, cs []compiled, pod, old *corev1.Pod, nsLabels map[string]string) outcome {
	t.Helper()
	va := attributes(pod, old)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pod.Namespace, Labels: nsLabels}}
	var out outcome
	for _, c := range cs {
		if !c.nsSel.Matches(labels.Set(nsLabels)) {
			continue
		}
		if !c.objSel.Matches(labels.Set(pod.Labels)) && (old == nil || !c.objSel.Matches(labels.Set(old.Labels))) {
			continue
		}
		res := c.validator.Validate(context.Background(), podsGVR, va, nil, ns, celconfig.RuntimeCELCostBudget, nil)
		for i, d := range res.Decisions {
			if d.Evaluation == validating.EvalError {
				t.Fatalf("%s: evaluation error: %s", c.policy.Name, d.Message)
			}
			if d.Action != validating.ActionDeny {
				continue
			}
			msg := c.refs[i] + ": " + d.Message
			for _, a := range c.binding.Spec.ValidationActions {
				switch a {
				case admissionregistrationv1.Deny:
					out.denied = append(out.denied, msg)
				case admissionregistrationv1.Warn:
					out.warnings = append(out.warnings, msg)
				case admissionregistrationv1.Audit:
					out.audits = append(out.audits, msg)
				}
			}
		}
	}
	return out
}

// newConditionMatcher compiles a webhook match condition as the apiserver does.
func newConditionMatcher(t testing.TB, expression string) matchconditions.Matcher {
	t.Helper()
	env := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	c, err := plugincel.NewCompositedCompiler(env)
	if err != nil {
		t.Fatal(err)
	}
	mc := admissionregistrationv1.MatchCondition{Name: "vap-scope", Expression: expression}
	return matchconditions.NewMatcher(c.CompileCondition([]plugincel.ExpressionAccessor{(*matchconditions.MatchCondition)(&mc)},
		plugincel.OptionalVariableDeclarations{HasAuthorizer: true}, environment.StoredExpressions), ptr.To(admissionregistrationv1.Fail), "webhook", "validating", "pods.imagegate.io")
}

// webhookCalled evaluates the webhook's match condition as the apiserver does.
func webhookCalled(t testing.TB, expression string, pod, old *corev1.Pod) bool {
	t.Helper()
	res := newConditionMatcher(t, expression).Match(context.Background(), attributes(pod, old), nil, nil)
	if res.Error != nil {
		t.Fatalf("match condition: %v", res.Error)
	}
	return res.Matches
}

func (o outcome) String() string {
	return fmt.Sprintf("denied: %s\nwarnings: %s\naudits: %s", strings.Join(o.denied, "\n  "), strings.Join(o.warnings, "\n  "), strings.Join(o.audits, "\n  "))
}
