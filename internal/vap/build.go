// Package vap compiles the name rules of imagegate's policies (patterns, tags, digests,
// selectors, modes, break-glass) into ValidatingAdmissionPolicies and their bindings, which
// the kube-apiserver evaluates itself: no webhook call, and no outage when imagegate is down.
// It also writes the match condition that sends to the webhook only the Pods it still must
// see (verify rules, references CEL does not normalize exactly, policies kept in the webhook).
// It is pure: Build turns a policy.Snapshot's NameRules into objects; the controller applies
// them.
package vap

import (
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
	// ManagedByValue is ManagedByLabel's value on the generated objects.
	ManagedByValue = "imagegate"
	// PolicyAnnotation names the imagegate policies a generated object decides, in the order
	// of its validations, comma-separated.
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
	// Validations names, per generated ValidatingAdmissionPolicy, the imagegate policy of
	// each of its validations, in order.
	Validations map[string][]policy.Ref
	// Compiled names, per policy, the ValidatingAdmissionPolicies that decide its name rules.
	Compiled map[policy.Ref][]string
	// Webhook says, per policy left to the webhook, why.
	Webhook map[policy.Ref]string
	// KeptClusterWide: a ClusterImagePolicy is kept in the webhook; KeptNamespaces: the
	// namespaces of the ImagePolicies kept there.
	KeptClusterWide bool
	KeptNamespaces  []string
}

// A group is the policies that share generated objects: the same validation action, and the
// same part in break-glass. Within a group, policies are chunked so that one object stays
// far below etcd's 1.5 MiB and one evaluation far below the apiserver's cost budget per
// binding (10,000,000): each policy is one validation, which first tries its own shortcut
// over the images as written (fastPath; its regular expressions are most of what an admitted
// Pod costs), and all share the one normalization of the Pod's images (variables.images and
// variables.refs) when a shortcut fails.
type group struct {
	name   string
	action admissionregistrationv1.ValidationAction
	// glass: "" for policies without break-glass; "deny" for the denials of policies that
	// allow it, which a Pod asking for break-glass is spared; "warn" for those same denials
	// as warnings, for such a Pod.
	glass string
}

const (
	maxChunkPolicies = 50
	maxChunkBytes    = 512 << 10
)

// Build compiles rules (policy.Snapshot.NameRules) into a Plan.
func Build(rules []policy.NameRules, opts Options) Plan {
	plan := Plan{Compiled: map[policy.Ref][]string{}, Webhook: map[policy.Ref]string{}, Validations: map[string][]policy.Ref{}}
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
	groups := []group{
		{name: "deny", action: admissionregistrationv1.Deny},
		{name: "warn", action: admissionregistrationv1.Warn},
		{name: "audit", action: admissionregistrationv1.Audit},
		{name: "deny-unless-break-glass", action: admissionregistrationv1.Deny, glass: "deny"},
		{name: "break-glass", action: admissionregistrationv1.Warn, glass: "warn"},
	}
	members := make([][]member, len(groups))
	for i := range rules {
		r := &rules[i]
		if r.Webhook != "" {
			keep(r, r.Webhook)
			continue
		}
		if !restricts(r) {
			continue // verify rules only: the webhook's verify scope covers it
		}
		glass := r.BreakGlass && r.Mode == v1alpha1.ModeEnforce
		var in []int
		switch {
		case glass:
			in = []int{3, 4}
		case r.Mode == v1alpha1.ModeWarn:
			in = []int{1}
		case r.Mode == v1alpha1.ModeAudit:
			in = []int{2}
		default:
			in = []int{0}
		}
		var made []member
		tooLong := ""
		for _, g := range in {
			suffix := ""
			if groups[g].glass == "warn" {
				suffix = "; admitted by break-glass"
			}
			m := member{rules: r, expression: violationsOf(r, suffix), fast: fastPath(r)}
			if len(m.fast) > maxExpression {
				m.fast = "" // a long proof is no shortcut: every Pod takes the full path
			}
			if len(m.expression) > maxExpression {
				tooLong = fmt.Sprintf("its rules make a CEL expression of %d characters, more than %d", len(m.expression), maxExpression)
			}
			made = append(made, m)
		}
		if tooLong != "" {
			keep(r, tooLong)
			continue
		}
		for j, g := range in {
			members[g] = append(members[g], made[j])
		}
	}
	for gi, g := range groups {
		var chunk []member
		size, n := 0, 0
		flush := func() {
			if len(chunk) == 0 {
				return
			}
			name := fmt.Sprintf("imagegate-%s-%d", g.name, n)
			n++
			p := chunkPolicy(name, g, chunk)
			plan.Policies = append(plan.Policies, p)
			plan.Bindings = append(plan.Bindings, bindingObject(name, g.action, opts))
			for _, m := range chunk {
				plan.Validations[name] = append(plan.Validations[name], m.rules.Ref)
				plan.Compiled[m.rules.Ref] = append(plan.Compiled[m.rules.Ref], name)
			}
			chunk, size = nil, 0
		}
		for _, m := range members[gi] {
			if len(chunk) == maxChunkPolicies || size+len(m.expression)+len(m.fast) > maxChunkBytes {
				flush()
			}
			chunk = append(chunk, m)
			size += len(m.expression) + len(m.fast)
		}
		flush()
	}
	return plan
}

// member is one policy's part in a generated object.
type member struct {
	rules *policy.NameRules
	// expression is its variable: per image, the list of its messages.
	expression string
	// fast proves, when it holds, that the policy has no message for the Pod (fastPath; ""
	// when the policy has no such proof).
	fast string
}

// violationsOf is the CEL of a policy's variable: for each image the engine checks, the list
// of the policy's messages about it, each ending with suffix; an empty list for a Pod the
// policy does not cover. The images the engine checks: all of a new Pod's, the new or changed
// ones of an updated Pod, and then, for a Pod relabelled into the podSelector, every other one
// (Evaluate's order).
func violationsOf(r *policy.NameRules, suffix string) string {
	each := "(r, " + violations(r, suffix) + ")"
	list := "variables.refs.filter(r, r.c == 'y').map" + each
	if sel := selectorCEL(r.PodSelector, oldPodLabelsCEL); sel != "true" {
		list += " + (request.operation == 'UPDATE' && !" + sel + " ? variables.refs.filter(r, r.c != 'y').map" + each + " : [])"
	}
	if c := covers(r); c != "true" {
		list = "!(" + c + ") ? [] : " + list
	}
	return list
}

// restricts reports whether the policy has a name rule (a verify-only policy has none).
func restricts(r *policy.NameRules) bool {
	return len(r.Allow) > 0 || len(r.Deny) > 0 || len(r.TagDeny) > 0 || r.RequireTag || r.RequireDigest
}

const (
	podLabelsCEL       = `(has(object.metadata.labels) ? object.metadata.labels : {})`
	oldPodLabelsCEL    = `(has(oldObject.metadata.labels) ? oldObject.metadata.labels : {})`
	namespaceLabelsCEL = `(has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {})`
)

// covers is whether the policy covers the Pod, in CEL: its namespace (an ImagePolicy's own,
// a ClusterImagePolicy's namespaceSelector) and its podSelector, on the Pod's labels now.
func covers(r *policy.NameRules) string {
	var parts []string
	if r.Ref.Kind == policy.KindImagePolicy {
		parts = append(parts, "request.namespace == "+quote(r.Ref.Namespace))
	} else if sel := selectorCEL(r.NamespaceSelector, namespaceLabelsCEL); sel != "true" {
		parts = append(parts, sel)
	}
	if sel := selectorCEL(r.PodSelector, podLabelsCEL); sel != "true" {
		parts = append(parts, sel)
	}
	if len(parts) == 0 {
		return "true"
	}
	return strings.Join(parts, " && ")
}

// meta is the metadata of a generated object.
func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: map[string]string{ManagedByLabel: ManagedByValue}}
}

// breakGlassCEL is policy.BreakGlassRequested on the Pod's annotations.
var breakGlassCEL = fmt.Sprintf(`has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.endsWith(%[1]s) && size(k) > %[2]d && object.metadata.annotations[k] == 'true')`,
	quote(policy.BreakGlassKeySuffix), len(policy.BreakGlassKeySuffix))

func chunkPolicy(name string, g group, chunk []member) admissionregistrationv1.ValidatingAdmissionPolicy {
	vars := []admissionregistrationv1.Variable{
		{Name: "images", Expression: imagesVar},
		{Name: "refs", Expression: refsVar},
	}
	if g.glass != "" {
		vars = append(vars, admissionregistrationv1.Variable{Name: "breakGlass", Expression: breakGlassCEL})
	}
	var validations []admissionregistrationv1.Validation
	var refs []string
	for i, m := range chunk {
		r := m.rules
		v := fmt.Sprintf("p%d", i)
		// quiet: when the policy has nothing to say, found without building its messages. The
		// apiserver evaluates a validation's messageExpression for every request, passed or
		// not, so the message checks it too: a Pod that passes costs the proof twice (once per
		// expression), never the normalization of its images.
		var quiet []string
		switch g.glass {
		case "deny":
			quiet = append(quiet, "variables.breakGlass")
		case "warn":
			quiet = append(quiet, "!variables.breakGlass")
		}
		if m.fast != "" {
			f := fmt.Sprintf("f%d", i)
			vars = append(vars, admissionregistrationv1.Variable{Name: f, Expression: m.fast})
			quiet = append(quiet, "variables."+f)
		}
		vars = append(vars, admissionregistrationv1.Variable{Name: v, Expression: m.expression})
		ok := "variables." + v + ".all(l, size(l) == 0)"
		q := strings.Join(quiet, " || ")
		if q != "" {
			ok = q + " || " + ok
		}
		// All of the policy's violations, as the webhook words them, on one line (the
		// apiserver refuses a message with a newline, or longer than 5 KiB).
		all := "variables." + v + ".filter(l, size(l) > 0).map(l, l.join('; ')).join('; ')"
		message := fmt.Sprintf(`%[1]s.size() <= %[2]d ? %[1]s : variables.%[3]s.filter(l, size(l) > 0)[0][0].substring(0, %[4]d) + '; and ' + string(variables.%[3]s.map(l, size(l)).sum() - 1) + ' more violations of this policy'`,
			all, maxMessage, v, maxMessage/2)
		if q != "" {
			message = "(" + q + ") ? '' : " + message
		}
		validations = append(validations, admissionregistrationv1.Validation{
			Expression: ok, MessageExpression: message,
			Message: fmt.Sprintf("an image is not allowed by %s %q", r.Ref.Kind, r.Ref.Name),
		})
		refs = append(refs, r.Ref.String())
	}
	p := admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: meta(name),
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
			Variables:   vars,
			Validations: validations,
		},
	}
	p.Annotations = map[string]string{PolicyAnnotation: strings.Join(refs, ",")}
	return p
}

// violations is the CEL list of the messages the policy gives one image r (Evaluate's
// evaluateImage and checkVersion, in their order), each ending with suffix.
func violations(r *policy.NameRules, suffix string) string {
	by := fmt.Sprintf(" is not allowed by %s %q: ", r.Ref.Kind, r.Ref.Name)
	msg := func(reason string) string {
		return opening + " + " + quote(by+policy.Printable(reason)+suffix)
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
		tagRules = append(tagRules, fmt.Sprintf(`(r.t == '' ? %s : (r.t in %s ? [%s + %s + r.t + %s] : []))`,
			latest, quoteList(r.TagDeny), opening, quote(by+`its tag "`), quote(`" is in tags.deny`+suffix)))
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

func bindingObject(name string, action admissionregistrationv1.ValidationAction, opts Options) admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	ns := &metav1.LabelSelector{}
	if len(opts.ExcludedNamespaces) > 0 {
		ns.MatchExpressions = []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: opts.ExcludedNamespaces,
		}}
	}
	return admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: meta(name),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{action},
			MatchResources:    &admissionregistrationv1.MatchResources{NamespaceSelector: ns},
		},
	}
}
