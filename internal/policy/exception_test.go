package policy

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

func exception(t *testing.T, doc string) v1alpha1.ImagePolicyException {
	t.Helper()
	var e v1alpha1.ImagePolicyException
	if err := yaml.UnmarshalStrict([]byte(doc), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

var at = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// An exception's ignored IDs let a verification pass when they cover every finding that
// failed it, and only then; the decision records which exception did it.
func TestExceptionIgnoresFindings(t *testing.T) {
	cps, _ := policies(t, cluster("scanned", `{verify: `+keySigner+`}`))
	ex := exception(t, `
metadata: {name: accepted-risk, namespace: shop}
spec:
  reason: patch due next week
  expiresAt: "2026-12-01T00:00:00Z"
  policies: [{kind: ClusterImagePolicy, name: scanned, rules: [verify]}]
  ignore: [CVE-2026-1111]`)
	snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{ex}, Now: func() time.Time { return at }})
	sub := Subject{Namespace: "shop", Images: containers("ghcr.io/acme/app" + vDigest)}
	for _, c := range []struct {
		name     string
		result   VerifyResult
		admitted bool
	}{
		{"ignored finding", VerifyResult{Reason: "has 1 vulnerability above High: CVE-2026-1111 (Critical)", Findings: []string{"CVE-2026-1111"}}, true},
		{"one finding not ignored", VerifyResult{Reason: "has 2 vulnerabilities above High", Findings: []string{"CVE-2026-1111", "CVE-2026-2222"}}, false},
		{"not a finding", VerifyResult{Reason: "no signature by a trusted signer"}, false},
	} {
		d := snap.Evaluate(&sub)
		if len(d.Pending) != 1 {
			t.Fatalf("%d pending", len(d.Pending))
		}
		snap.Settle(&sub, &d, []VerifyResult{c.result})
		if d.Allowed() != c.admitted {
			t.Errorf("%s: admitted = %v: %v", c.name, d.Allowed(), lines(&d))
		}
		if c.admitted && (len(d.Exempted) != 1 || d.Exempted[0].Exception.Name != "accepted-risk") {
			t.Errorf("%s: exempted = %+v", c.name, d.Exempted)
		}
	}
	// Expired: the same finding refuses again.
	late := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{ex}, Now: func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }})
	d := late.Evaluate(&sub)
	late.Settle(&sub, &d, []VerifyResult{{Reason: "has 1 vulnerability", Findings: []string{"CVE-2026-1111"}}})
	if d.Allowed() {
		t.Error("an expired exception's ignore still applied")
	}
}

// breakGlassRequiresException: the annotation works only for Pods, rules and images that an
// active exception granting break-glass (allowBreakGlass) selects, names and covers; such an
// exception exempts nothing by itself; and an exception that only ignores findings, or
// exempts other images or rules, never unlocks it.
func TestBreakGlassRequiresException(t *testing.T) {
	cps, _ := policies(t, cluster("trusted", `{allowBreakGlass: true, breakGlassRequiresException: true, images: {allow: ["ghcr.io/acme/**"]}}`))
	grant := `
metadata: {name: incident-42, namespace: shop}
spec:
  reason: incident 42, hotfix from a fork
  expiresAt: "2026-11-27T00:00:00Z"
  podSelector: {matchLabels: {app: payments}}
  images: ["quay.io/fork/**"]
  allowBreakGlass: true
  policies: [{kind: ClusterImagePolicy, name: trusted}]`
	glass := func(doc string, labels map[string]string, breakGlass bool) Decision {
		snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{exception(t, doc)}, Now: func() time.Time { return at }})
		sub := Subject{Namespace: "shop", PodLabels: labels, BreakGlass: breakGlass, Images: containers("quay.io/fork/payments:hotfix")}
		return snap.Evaluate(&sub)
	}
	payments := map[string]string{"app": "payments"}
	if d := glass(grant, payments, true); !d.Allowed() || d.Outcome() != DecisionAllowedByBreakGlass {
		t.Errorf("a Pod the grant selects: %s %v", d.Outcome(), lines(&d))
	}
	for _, c := range []struct {
		name, doc  string
		labels     map[string]string
		breakGlass bool
	}{
		{"a Pod no exception selects", grant, map[string]string{"app": "web"}, true},
		{"the grant without the annotation", grant, payments, false},
		{"a grant for other images", strings.Replace(grant, "quay.io/fork/**", "ghcr.io/acme/unused", 1), payments, true},
		{"a grant for another rule", strings.Replace(grant, "name: trusted}", "name: trusted, rules: [tags.deny]}", 1), payments, true},
		{"an ignore-only exception", `
metadata: {name: cve-waiver, namespace: shop}
spec:
  reason: CVE-2026-1111 is not reachable
  images: ["quay.io/fork/**"]
  ignore: [CVE-2026-1111]
  policies: [{kind: ClusterImagePolicy, name: trusted, rules: [verify]}]`, payments, true},
		{"an exception for another rule", `
metadata: {name: tags, namespace: shop}
spec:
  reason: the vendor ships latest
  policies: [{kind: ClusterImagePolicy, name: trusted, rules: [tags.deny]}]`, payments, true},
	} {
		if d := glass(c.doc, c.labels, c.breakGlass); d.Allowed() {
			t.Errorf("%s: admitted: %s %v", c.name, d.Outcome(), lines(&d))
		}
	}
}

func TestExceptionProblems(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{`{metadata: {name: e, namespace: shop}, spec: {reason: r, policies: []}}`, "spec.policies: an exception names at least one policy"},
		{`{metadata: {name: e, namespace: shop}, spec: {reason: r, images: ["docker.io/a b"], policies: [{kind: ClusterImagePolicy, name: p}]}}`, `spec.images[0]: invalid pattern`},
		{`{metadata: {name: e, namespace: shop}, spec: {reason: r, policies: [{kind: Pod, name: p}]}}`, `spec.policies[0].kind: "Pod"`},
		{`{metadata: {name: e, namespace: shop}, spec: {reason: r, policies: [{kind: ClusterImagePolicy, name: p, rules: [policy]}]}}`, `spec.policies[0].rules: "policy" is not one of`},
		{`{metadata: {name: e, namespace: shop}, spec: {reason: r, expiresAt: "2026-11-26T11:59:59Z", policies: [{kind: ClusterImagePolicy, name: p}]}}`, "spec.expiresAt: 2026-11-26T11:59:59Z is not in the future"},
		{`{metadata: {name: e, namespace: shop}, spec: {reason: " ", policies: [{kind: ClusterImagePolicy, name: p}]}}`, "spec.reason: required"},
	} {
		ex := exception(t, c.doc)
		got := strings.Join(ValidateException(&ex, true, at), "; ")
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.doc, got, c.want)
		}
	}
	// An exception that keeps a past expiry on update is not refused for it (its status is
	// written after it expires); a creation is.
	ex := exception(t, `{metadata: {name: e, namespace: shop}, spec: {reason: r, expiresAt: "2026-01-01T00:00:00Z", policies: [{kind: ClusterImagePolicy, name: p}]}}`)
	if p := ValidateException(&ex, false, at); len(p) != 0 {
		t.Errorf("update: %v", p)
	}
	// An invalid exception exempts nothing, and says why.
	cps, _ := policies(t, cluster("no-latest", `{tags: {deny: [latest]}}`))
	bad := exception(t, `{metadata: {name: bad, namespace: shop}, spec: {reason: r, images: ["docker.io/a b"], policies: [{kind: ClusterImagePolicy, name: no-latest}]}}`)
	snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{bad}, Now: func() time.Time { return at }})
	if e := snap.ExceptionError(Ref{Kind: KindImagePolicyException, Namespace: "shop", Name: "bad"}); !strings.Contains(e, "invalid pattern") {
		t.Errorf("ExceptionError = %q", e)
	}
	if d := snap.Evaluate(&Subject{Namespace: "shop", Images: containers("nginx:latest")}); d.Allowed() {
		t.Error("an invalid exception exempted")
	}
}

// An exception naming every rule of a policy exempts the image rules only: an invalid
// policy, an unknown namespace and an unparsable image still refuse.
func TestExceptionsNeverExemptPolicyFailures(t *testing.T) {
	cps, _ := policies(t,
		cluster("broken", `{podSelector: {matchExpressions: [{key: "bad key!", operator: Exists}]}, tags: {deny: [latest]}}`),
		cluster("by-ns", `{namespaceSelector: {matchLabels: {env: prod}}, tags: {deny: [latest]}}`),
		cluster("trusted", `{images: {allow: ["ghcr.io/acme/**"]}}`))
	ex := exception(t, `
metadata: {name: all, namespace: shop}
spec:
  reason: everything
  policies: [{kind: ClusterImagePolicy, name: broken}, {kind: ClusterImagePolicy, name: by-ns}, {kind: ClusterImagePolicy, name: trusted}]`)
	snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{ex}, Now: func() time.Time { return at }})
	d := snap.Evaluate(&Subject{Namespace: "shop", NamespaceUnknown: true, Images: containers("ghcr.io/acme/app:1", "Not An Image")})
	var rules []string
	for _, v := range d.Violations {
		rules = append(rules, v.Policy.Name+"/"+string(v.Rule))
	}
	got := strings.Join(rules, " ")
	for _, want := range []string{"broken/policy", "by-ns/namespaceSelector", "trusted/reference"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s was exempted: violations %v", want, got)
		}
	}
}

// A Pod refused by many policies gets the first MaxMessages lines and a count of the rest.
func TestDenialMessageIsCapped(t *testing.T) {
	snap := Compile(benchPolicies(100), nil)
	d := snap.Evaluate(&Subject{Namespace: "team-a", Images: containers("quay.io/evil/miner:1")})
	lines := strings.Split(d.DenialMessage(), "\n")
	if len(lines) != MaxMessages+1 || lines[MaxMessages] != `... and 80 more violations (100 in all, of 100 policies; the audit annotation "policies" names every policy)` {
		t.Fatalf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
	if strings.Count(d.AuditAnnotations()[AnnotationPolicies], "ClusterImagePolicy/") != 100 {
		t.Error("the audit annotation must still name every policy")
	}
}

// An exception that names a policy that does not exist says so (its status shows it).
func TestExceptionMissingPolicy(t *testing.T) {
	cps, _ := policies(t, cluster("no-latest", `{tags: {deny: [latest]}}`))
	ex := exception(t, `{metadata: {name: e, namespace: shop}, spec: {reason: r, policies: [{kind: ClusterImagePolicy, name: no-latest}, {kind: ClusterImagePolicy, name: typo}, {kind: ImagePolicy, name: local}]}}`)
	snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{ex}})
	got := snap.ExceptionMissing(Ref{Kind: KindImagePolicyException, Namespace: "shop", Name: "e"})
	want := []Ref{{Kind: KindClusterImagePolicy, Name: "typo"}, {Kind: KindImagePolicy, Namespace: "shop", Name: "local"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("ExceptionMissing = %v, want %v", got, want)
	}
}

// An exception's allowBreakGlass matters only for policies whose break-glass requires one;
// for the others it changes nothing, and its status says so.
func TestExceptionBreakGlassUnused(t *testing.T) {
	cps, _ := policies(t,
		cluster("gated", `{allowBreakGlass: true, breakGlassRequiresException: true, tags: {deny: [latest]}}`),
		cluster("open", `{allowBreakGlass: true, tags: {deny: [latest]}}`),
		cluster("none", `{tags: {deny: [latest]}}`))
	grant := exception(t, `{metadata: {name: grant, namespace: shop}, spec: {reason: r, allowBreakGlass: true, policies: [{kind: ClusterImagePolicy, name: gated}, {kind: ClusterImagePolicy, name: open}, {kind: ClusterImagePolicy, name: none}, {kind: ClusterImagePolicy, name: typo}]}}`)
	plain := exception(t, `{metadata: {name: plain, namespace: shop}, spec: {reason: r, policies: [{kind: ClusterImagePolicy, name: open}]}}`)
	snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{grant, plain}})
	got := snap.ExceptionBreakGlassUnused(Ref{Kind: KindImagePolicyException, Namespace: "shop", Name: "grant"})
	want := []Ref{{Kind: KindClusterImagePolicy, Name: "open"}, {Kind: KindClusterImagePolicy, Name: "none"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ExceptionBreakGlassUnused = %v, want %v (a missing policy is ExceptionMissing's to report)", got, want)
	}
	if got := snap.ExceptionBreakGlassUnused(Ref{Kind: KindImagePolicyException, Namespace: "shop", Name: "plain"}); len(got) != 0 {
		t.Errorf("an exception without allowBreakGlass: %v, want none", got)
	}
}

// An exception that lifts a thousand violations warns with MaxMessages lines and a count.
func TestExemptionMessagesAreCapped(t *testing.T) {
	cps := benchPolicies(100)
	var policies []v1alpha1.ExceptedPolicy
	for _, p := range cps {
		policies = append(policies, v1alpha1.ExceptedPolicy{Kind: KindClusterImagePolicy, Name: p.Name})
	}
	ex := v1alpha1.ImagePolicyException{Spec: v1alpha1.ImagePolicyExceptionSpec{Reason: "r", Policies: policies}}
	ex.Name, ex.Namespace = "all", "team-a"
	snap := CompileWith(cps, nil, Options{Exceptions: []v1alpha1.ImagePolicyException{ex}})
	d := snap.Evaluate(&Subject{Namespace: "team-a", Images: containers("quay.io/evil/miner:1")})
	if !d.Allowed() || len(d.Exempted) != 100 {
		t.Fatalf("allowed %v, %d exempted", d.Allowed(), len(d.Exempted))
	}
	w := d.ExemptionMessages()
	if len(w) != MaxMessages+1 || !strings.HasPrefix(w[MaxMessages], "... and 80 more exemptions") {
		t.Fatalf("%d warnings, last %q", len(w), w[len(w)-1])
	}
}
