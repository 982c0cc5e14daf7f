// Package vap compiles the name rules of imagegate's policies (patterns, tags, digests,
// selectors, modes, break-glass) into ValidatingAdmissionPolicies and their bindings, which
// the kube-apiserver evaluates itself: no webhook call, and no outage when imagegate is down.
// It also writes the match condition that sends to the webhook only the Pods it still must
// see (verify rules, references CEL does not normalize exactly, policies kept in the webhook).
// It is pure: Build turns a policy.Snapshot's NameRules into objects; the controller applies
// them.
package vap

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
	"github.com/imagegate/imagegate/internal/policy"
)

const (
	// ManagedByLabel marks the objects the manager owns (value ManagedByValue): it lists,
	// updates and deletes only those.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "imagegate"
	// PolicyAnnotation names the imagegate policy an object was compiled from.
	PolicyAnnotation = "imagegate.io/policy"

	// maxExpression bounds one generated expression, well within the apiserver's limit of
	// 100,000 characters: a policy beyond it stays in the webhook.
	maxExpression = 90000
	// maxMessage bounds the message, which the apiserver drops beyond 5 KiB.
	maxMessage = 4000
)

// Options configure Build.
type Options struct {
	// ExcludedNamespaces are the namespaces the webhooks never see (the manager's
	// --excluded-namespaces): the bindings leave them out too.
	ExcludedNamespaces []string
}

// Plan is what Build produced: the objects the apiserver should hold, and the policies
// whose name rules stay in the webhook.
type Plan struct {
	Policies []admissionregistrationv1.ValidatingAdmissionPolicy
	Bindings []admissionregistrationv1.ValidatingAdmissionPolicyBinding
	// Compiled names, per policy, the ValidatingAdmissionPolicies that decide its name rules.
	Compiled map[policy.Ref][]string
	// Webhook says, per policy left to the webhook, why.
	Webhook map[policy.Ref]string
	// KeptClusterWide: a ClusterImagePolicy is kept in the webhook; KeptNamespaces: the
	// namespaces of the ImagePolicies kept there.
	KeptClusterWide bool
	KeptNamespaces  []string
}

// Build compiles rules (policy.Snapshot.NameRules) into a Plan.
func Build(rules []policy.NameRules, opts Options) Plan {
	plan := Plan{Compiled: map[policy.Ref][]string{}, Webhook: map[policy.Ref]string{}}
	kept := map[string]bool{}
	keep := func(r *policy.NameRules, why string) {
		plan.Webhook[r.Ref] = why
		if r.Ref.Kind == policy.KindClusterImagePolicy {
			plan.KeptClusterWide = true
		} else if !kept[r.Ref.Namespace] {
			kept[r.Ref.Namespace] = true
			plan.KeptNamespaces = append(plan.KeptNamespaces, r.Ref.Namespace)
		}
	}
	for i := range rules {
		r := &rules[i]
		if r.Webhook != "" {
			keep(r, r.Webhook)
			continue
		}
		if !restricts(r) {
			continue // verify rules only: the webhook's verify scope covers it
		}
		base := objectName(r.Ref)
		glass := r.BreakGlass && r.Mode == v1alpha1.ModeEnforce
		objs := []struct {
			name, suffix string
			action       admissionregistrationv1.ValidationAction
			when         string // the extra condition under which the violations count
		}{{name: base, action: actionOf(r.Mode)}}
		if glass {
			objs[0].when = "!variables.breakGlass"
			objs = append(objs, struct {
				name, suffix string
				action       admissionregistrationv1.ValidationAction
				when         string
			}{name: base + "-break-glass", suffix: "; admitted by break-glass", action: admissionregistrationv1.Warn, when: "variables.breakGlass"})
		}
		var made []admissionregistrationv1.ValidatingAdmissionPolicy
		tooLong := ""
		for _, o := range objs {
			p := policyObject(r, o.name, o.suffix, o.when, glass)
			for _, v := range p.Spec.Variables {
				if len(v.Expression) > maxExpression {
					tooLong = fmt.Sprintf("its rules make a CEL expression of %d characters, more than %d", len(v.Expression), maxExpression)
				}
			}
			made = append(made, p)
		}
		if tooLong != "" {
			keep(r, tooLong)
			continue
		}
		for j, o := range objs {
			plan.Policies = append(plan.Policies, made[j])
			plan.Bindings = append(plan.Bindings, bindingObject(r, o.name, o.action, opts))
			plan.Compiled[r.Ref] = append(plan.Compiled[r.Ref], o.name)
		}
	}
	return plan
}

// restricts reports whether the policy has a name rule (a verify-only policy has none).
func restricts(r *policy.NameRules) bool {
	return len(r.Allow) > 0 || len(r.Deny) > 0 || len(r.TagDeny) > 0 || r.RequireTag || r.RequireDigest
}

func actionOf(m v1alpha1.PolicyMode) admissionregistrationv1.ValidationAction {
	switch m {
	case v1alpha1.ModeWarn:
		return admissionregistrationv1.Warn
	case v1alpha1.ModeAudit:
		return admissionregistrationv1.Audit
	default:
		return admissionregistrationv1.Deny
	}
}

// objectName is the generated objects' name: a hash of the policy's identity, so that any
// namespace and name fit and two policies never share one.
func objectName(ref policy.Ref) string {
	sum := sha256.Sum256([]byte(ref.Kind + "/" + ref.Namespace + "/" + ref.Name))
	return "imagegate-" + hex.EncodeToString(sum[:8])
}

func meta(r *policy.NameRules, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:        name,
		Labels:      map[string]string{ManagedByLabel: ManagedByValue},
		Annotations: map[string]string{PolicyAnnotation: r.Ref.String()},
	}
}

// breakGlassCEL is policy.BreakGlassRequested on the Pod's annotations.
var breakGlassCEL = fmt.Sprintf(`has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.endsWith(%[1]s) && size(k) > %[2]d && object.metadata.annotations[k] == 'true')`,
	quote(policy.BreakGlassKeySuffix), len(policy.BreakGlassKeySuffix))

func policyObject(r *policy.NameRules, name, suffix, when string, glass bool) admissionregistrationv1.ValidatingAdmissionPolicy {
	labels := `(has(object.metadata.labels) ? object.metadata.labels : {})`
	oldLabels := `(has(oldObject.metadata.labels) ? oldObject.metadata.labels : {})`
	// The images the engine checks: all of a new Pod's, the new or changed ones of an updated
	// Pod, and then, for a Pod relabelled into the podSelector, every other one (Evaluate's
	// order).
	each := "(r, " + violations(r, suffix) + ")"
	list := "variables.refs.filter(r, r.c == 'y').map" + each
	if sel := selectorCEL(r.PodSelector, oldLabels); sel != "true" {
		list += " + (request.operation == 'UPDATE' && !" + sel + " ? variables.refs.filter(r, r.c != 'y').map" + each + " : [])"
	}
	vars := []admissionregistrationv1.Variable{
		{Name: "images", Expression: imagesVar},
		{Name: "refs", Expression: refsVar},
	}
	if glass {
		vars = append(vars, admissionregistrationv1.Variable{Name: "breakGlass", Expression: breakGlassCEL})
	}
	vars = append(vars,
		admissionregistrationv1.Variable{Name: "violations", Expression: list},
		admissionregistrationv1.Variable{Name: "count", Expression: "variables.violations.map(l, size(l)).sum()"},
	)
	ok := "variables.count == 0"
	if when != "" {
		ok = "!(" + when + ") || " + ok
	}
	// All of the policy's violations, as the webhook words them, on one line (the apiserver
	// refuses a message with a newline, or longer than 5 KiB).
	message := fmt.Sprintf(`variables.violations.filter(l, size(l) > 0).map(l, l.join('; ')).join('; ').size() <= %d ? `+
		`variables.violations.filter(l, size(l) > 0).map(l, l.join('; ')).join('; ') : `+
		`variables.violations.filter(l, size(l) > 0)[0][0].substring(0, %d) + '; and ' + string(variables.count - 1) + ' more violations of this policy'`, maxMessage, maxMessage/2)
	p := admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: meta(r, name),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{""}, APIVersions: []string{"v1"},
							Resources: []string{"pods", "pods/ephemeralcontainers"},
							Scope:     ptr.To(admissionregistrationv1.NamespacedScope),
						},
					},
				}},
			},
			Variables: vars,
			Validations: []admissionregistrationv1.Validation{{
				Expression:        ok,
				MessageExpression: message,
				Message:           fmt.Sprintf("an image is not allowed by %s %q", r.Ref.Kind, r.Ref.Name),
			}},
		},
	}
	if sel := selectorCEL(r.PodSelector, labels); sel != "true" {
		p.Spec.MatchConditions = []admissionregistrationv1.MatchCondition{{Name: "pod-selector", Expression: sel}}
	}
	return p
}

// violations is the CEL list of the messages the policy gives one image r (Evaluate's
// evaluateImage and checkVersion, in their order), each ending with suffix.
func violations(r *policy.NameRules, suffix string) string {
	opening := fmt.Sprintf(" is not allowed by %s %q: ", r.Ref.Kind, r.Ref.Name)
	msg := func(reason string) string {
		return "r.q + " + quote(opening+policy.Printable(reason)+suffix)
	}
	var rules []string
	if len(r.Deny) > 0 {
		// The first images.deny pattern that matches.
		chain := "[]"
		for i := len(r.Deny) - 1; i >= 0; i-- {
			chain = fmt.Sprintf("%s ? [%s] : %s", patternMatch(&r.Deny[i], "r"), msg(fmt.Sprintf("it matches images.deny[%d] %q", i, r.DenyWritten[i])), chain)
		}
		rules = append(rules, "("+chain+")")
	}
	if len(r.Allow) > 0 {
		rules = append(rules, "("+anyMatch(r.Allow, "r")+" ? [] : ["+msg("it matches no pattern in images.allow")+"])")
	}
	if r.RequireDigest {
		rules = append(rules, "(r.d == '' ? ["+msg("it is not pinned by digest (@sha256:...) and requireDigest is set")+"] : [])")
	}
	var tagRules []string
	if r.RequireTag {
		tagRules = append(tagRules, "(r.t == '' ? ["+msg("it has neither tag nor digest and tags.requireTag is set")+"] : [])")
	}
	if len(r.TagDeny) > 0 {
		latest := "[]"
		for _, t := range r.TagDeny {
			if t == "latest" {
				latest = "[" + msg(`it has neither tag nor digest, so it runs as "latest", which is in tags.deny`) + "]"
			}
		}
		tagRules = append(tagRules, fmt.Sprintf(`(r.t == '' ? %s : (r.t in %s ? [r.q + %s + r.t + %s] : []))`,
			latest, quoteList(r.TagDeny), quote(opening+`its tag "`), quote(`" is in tags.deny`+suffix)))
	}
	if len(tagRules) > 0 {
		rules = append(rules, "(r.d != '' ? [] : "+strings.Join(tagRules, " + ")+")")
	}
	body := strings.Join(rules, " + ")
	if body == "" {
		body = "[]"
	}
	exempt := "false"
	if len(r.Exempt) > 0 {
		exempt = anyMatch(r.Exempt, "r")
	}
	idReason := "it " + imageref.ErrImageID.Error()
	return fmt.Sprintf("(r.k == 'x' ? [] : r.k == 'id' ? [%s] : %s ? [] : %s)", msg(idReason), exempt, body)
}

func anyMatch(patterns []imageref.Pattern, r string) string {
	parts := make([]string, len(patterns))
	for i := range patterns {
		parts[i] = patternMatch(&patterns[i], r)
	}
	return "(" + strings.Join(parts, " || ") + ")"
}

func bindingObject(r *policy.NameRules, name string, action admissionregistrationv1.ValidationAction, opts Options) admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	ns := &metav1.LabelSelector{}
	if r.Ref.Kind == policy.KindImagePolicy {
		ns.MatchLabels = map[string]string{"kubernetes.io/metadata.name": r.Ref.Namespace}
	} else if r.NamespaceSelector != nil {
		ns = r.NamespaceSelector.DeepCopy()
	}
	if len(opts.ExcludedNamespaces) > 0 {
		ns.MatchExpressions = append(ns.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: opts.ExcludedNamespaces,
		})
	}
	return admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: meta(r, name),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{action},
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: ns,
				ObjectSelector:    r.PodSelector.DeepCopy(),
			},
		},
	}
}
