package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

func (e *benchEnv) configs() []admissionConfig {
	all := []admissionConfig{
		{key: "none", name: "no admission webhook", setup: func(context.Context, *benchEnv) (func() error, error) { return nil, nil }},
		{key: "vap", name: "ValidatingAdmissionPolicy (CEL)", enforces: true, setup: setupVAP},
		{key: "noop", name: "no-op webhook", setup: setupNoop},
		{key: "imagegate", name: "imagegate", enforces: true, setup: setupImagegate},
		{key: "gatekeeper", name: "Gatekeeper " + peerVersion(e.o.root, "gatekeeper"), enforces: true, setup: setupGatekeeper},
		{key: "kyverno", name: "Kyverno " + peerVersion(e.o.root, "kyverno"), enforces: true, setup: setupKyverno},
		// The baseline again, so that drift over the run shows and averages out.
		{key: "none", name: "no admission webhook (again, last)", setup: func(context.Context, *benchEnv) (func() error, error) { return nil, nil }},
	}
	var out []admissionConfig
	for _, c := range all {
		if e.o.configs == "" || slices.Contains(strings.Split(e.o.configs, ","), c.key) {
			out = append(out, c)
		}
	}
	return out
}

// peerVersion is the version hack/bench/<name>/go.mod pins.
func peerVersion(root, name string) string {
	b, err := os.ReadFile(filepath.Join(root, "hack", "bench", name, "go.mod"))
	if err != nil {
		return "(unknown version)"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "require" {
			return f[2]
		}
	}
	return "(unknown version)"
}

// webhookConfiguration registers url for Pod CREATE and UPDATE in the namespaces selector
// picks, failing closed, as each product's own configuration does for Pods.
func webhookConfiguration(name, url string, caPEM []byte, selector map[string]string) []byte {
	doc := map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1",
		"kind":       "ValidatingWebhookConfiguration",
		"metadata":   map[string]any{"name": name},
		"webhooks": []any{map[string]any{
			"name":                    name + ".bench.imagegate.io",
			"clientConfig":            map[string]any{"url": url, "caBundle": caPEM},
			"rules":                   []any{map[string]any{"apiGroups": []string{""}, "apiVersions": []string{"v1"}, "operations": []string{"CREATE", "UPDATE"}, "resources": []string{"pods"}}},
			"namespaceSelector":       map[string]any{"matchLabels": selector},
			"failurePolicy":           "Fail",
			"sideEffects":             "None",
			"timeoutSeconds":          10,
			"admissionReviewVersions": []string{"v1", "v1beta1"},
		}},
	}
	b, _ := json.Marshal(doc)
	return b
}

func setupVAP(_ context.Context, e *benchEnv) (func() error, error) {
	expr := strings.ReplaceAll(vapExpression, "params.", "variables.")
	var sel struct{ key, value string }
	for k, v := range e.namespaces() {
		sel.key, sel.value = k, v
	}
	manifest := fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: bench-images
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["pods"]
  variables:
  - name: repos
    expression: "['%s', '%s']"
  - name: tags
    expression: "['latest']"
  validations:
  - expression: %q
    message: an image is not from an allowed registry, or its tag is latest
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: bench-images
spec:
  policyName: bench-images
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        %s: %q
`, sharedRepo, teamRepo(0), expr, sel.key, sel.value)
	teardown := func() error {
		return e.kubectl(nil, "delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", "bench-images", "--ignore-not-found")
	}
	return teardown, e.kubectl([]byte(manifest), "apply", "-f", "-")
}

func setupNoop(ctx context.Context, e *benchEnv) (func() error, error) {
	p, url, err := e.startNoop(ctx)
	if err != nil {
		return nil, err
	}
	teardown := func() error {
		err := e.kubectl(nil, "delete", "validatingwebhookconfiguration", "noop", "--ignore-not-found")
		return errors.Join(err, p.Stop())
	}
	return teardown, e.kubectl(webhookConfiguration("noop", url, e.cluster.CA.CertPEM, e.namespaces()), "apply", "-f", "-")
}

// setupImagegate runs the manager as shipped, registered from config/local (the shipped
// webhook configuration with a loopback URL), with the one bench policy.
func setupImagegate(ctx context.Context, e *benchEnv) (func() error, error) {
	if err := e.manager.Start(ctx); err != nil {
		return nil, err
	}
	teardown := func() error {
		err := e.kubectl(nil, "delete", "validatingwebhookconfiguration", "imagegate-local-validating-webhook-configuration", "--ignore-not-found")
		// config/local registers the pinning webhook too: left behind, it would refuse every
		// later configuration's Pods once the manager stops.
		err = errors.Join(err, e.kubectl(nil, "delete", "mutatingwebhookconfiguration", "imagegate-local-mutating-webhook-configuration", "--ignore-not-found"))
		return errors.Join(err, e.manager.Stop())
	}
	return teardown, e.manager.RegisterWebhook(e.o.root)
}

// setupGatekeeper runs Gatekeeper's webhook (--operation=webhook) out of cluster with a
// serving certificate from the cluster's CA, its CRDs from the module, the K8sAllowedRepos
// template from the module's demo and a disallowed-tags template, and one constraint each.
func setupGatekeeper(ctx context.Context, e *benchEnv) (func() error, error) {
	bin, err := e.peer("gatekeeper", e.o.gatekeeperDir)
	if err != nil {
		return nil, err
	}
	if err := e.kubectl(nil, "apply", "--server-side", "-f", filepath.Join(e.o.gatekeeperDir, "manifest_staging", "charts", "gatekeeper", "crds")); err != nil {
		return nil, err
	}
	if err := e.kubectl(nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		return nil, err
	}
	if err := e.kubectl(nil, "create", "namespace", "gatekeeper-system"); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		return nil, err
	}
	// Gatekeeper owns its status objects through its own Pod (POD_NAME): stand one in (it
	// never runs: there is no kubelet here).
	gkPod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"gatekeeper-bench","namespace":"gatekeeper-system"},
"spec":{"containers":[{"name":"manager","image":"openpolicyagent/gatekeeper:%s"}]}}`, peerVersion(e.o.root, "gatekeeper"))
	if err := e.kubectl([]byte(gkPod), "apply", "-f", "-"); err != nil {
		return nil, err
	}
	certDir := filepath.Join(e.cluster.Dir, "gatekeeper-certs")
	if err := writeServing(e.cluster.CA, certDir); err != nil {
		return nil, err
	}
	port, health, err := freePorts()
	if err != nil {
		return nil, err
	}
	p, err := e.cluster.Run("gatekeeper", bin, []string{"POD_NAMESPACE=gatekeeper-system", "POD_NAME=gatekeeper-bench"},
		// The operations of Gatekeeper's controller-manager Deployment (generate: the
		// constraint CRDs of the templates); mutation is not part of this comparison.
		"--operation=webhook", "--operation=generate", "--host=127.0.0.1", fmt.Sprintf("--port=%d", port), "--cert-dir="+certDir,
		"--disable-cert-rotation", fmt.Sprintf("--health-addr=127.0.0.1:%d", health), "--metrics-addr=0",
		"--log-level=WARNING")
	if err != nil {
		return nil, err
	}
	teardown := func() error {
		err := e.kubectl(nil, "delete", "validatingwebhookconfiguration", "gatekeeper", "--ignore-not-found")
		err = errors.Join(err, e.kubectl(nil, "delete", "constrainttemplates", "--all", "--ignore-not-found"))
		return errors.Join(err, p.Stop())
	}
	if err := p.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", health), false); err != nil {
		return teardown, err
	}
	tplPath, _, err := allowedReposTemplate(e.o.gatekeeperDir)
	if err != nil {
		return teardown, err
	}
	if err := e.kubectl(nil, "apply", "-f", tplPath); err != nil {
		return teardown, err
	}
	if err := e.kubectl([]byte(disallowedTagsTemplate()), "apply", "-f", "-"); err != nil {
		return teardown, err
	}
	constraints := fmt.Sprintf(`apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sAllowedRepos
metadata:
  name: bench-repos
spec:
  match:
    kinds:
    - apiGroups: [""]
      kinds: ["Pod"]
  parameters:
    repos: ["%s", "%s"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sDisallowedTags
metadata:
  name: bench-tags
spec:
  match:
    kinds:
    - apiGroups: [""]
      kinds: ["Pod"]
  parameters:
    tags: ["latest"]
`, sharedRepo, teamRepo(0))
	// The constraint kinds exist once Gatekeeper has compiled the templates.
	if err := retry(ctx, 2*time.Minute, func() error { return e.kubectl([]byte(constraints), "apply", "-f", "-") }); err != nil {
		return teardown, fmt.Errorf("%w; end of the Gatekeeper log:\n%s", err, p.Log())
	}
	return teardown, e.kubectl(webhookConfiguration("gatekeeper", fmt.Sprintf("https://127.0.0.1:%d/v1/admit", port), e.cluster.CA.CertPEM, e.namespaces()), "apply", "-f", "-")
}

func disallowedTagsTemplate() string {
	indented := "        " + strings.ReplaceAll(strings.TrimSpace(disallowedTagsRego), "\n", "\n        ")
	return `apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sdisallowedtags
spec:
  crd:
    spec:
      names:
        kind: K8sDisallowedTags
      validation:
        openAPIV3Schema:
          type: object
          properties:
            tags:
              type: array
              items:
                type: string
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
` + indented + "\n"
}

// setupKyverno runs Kyverno's admission controller out of cluster the way Kyverno supports
// it (--serverIP: its webhook configurations point at that address, and its own certificate
// controller adds it to the serving certificate), with its CRDs from the module and one
// ClusterPolicy of two rules in the style of the kyverno/policies library
// (restrict-image-registries, disallow-latest-tag). Everything else is Kyverno's default.
func setupKyverno(ctx context.Context, e *benchEnv) (func() error, error) {
	return startKyverno(ctx, e, "bench-images", kyvernoImagesPolicy())
}

// startKyverno runs Kyverno's admission controller as its Helm chart does (with extraArgs)
// and applies policy, the ClusterPolicy named name, once Kyverno's own webhook takes it.
func startKyverno(ctx context.Context, e *benchEnv, name, policy string, extraArgs ...string) (func() error, error) {
	bin, err := e.peer("kyverno", e.o.kyvernoDir)
	if err != nil {
		return nil, err
	}
	if err := e.kubectl(nil, "apply", "--server-side", "-R", "-f", filepath.Join(e.o.kyvernoDir, "config", "crds")); err != nil {
		return nil, err
	}
	if err := e.kubectl(nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		return nil, err
	}
	if err := e.kubectl(nil, "create", "namespace", "kyverno"); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		return nil, err
	}
	// The configuration the Helm chart installs by default (the part that applies here).
	cms := `apiVersion: v1
kind: ConfigMap
metadata:
  name: kyverno
  namespace: kyverno
data:
  enableDefaultRegistryMutation: "true"
  generateSuccessEvents: "false"
  resourceFilters: '[Event,*,*] [*/*,kube-system,*] [*/*,kube-public,*] [*/*,kube-node-lease,*] [Node,*,*] [Node/?*,*,*] [APIService,*,*] [APIService/?*,*,*] [TokenReview,*,*] [SubjectAccessReview,*,*] [SelfSubjectAccessReview,*,*] [Binding,*,*] [Pod/binding,*,*] [ReplicaSet,*,*] [ReplicaSet/?*,*,*] [EphemeralReport,*,*] [ClusterEphemeralReport,*,*]'
  webhooks: '{"namespaceSelector": {"matchExpressions": [{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kyverno"]}]}}'
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kyverno-metrics
  namespace: kyverno
data:
  namespaces: '{"include": [], "exclude": []}'
`
	if err := e.kubectl([]byte(cms), "apply", "-f", "-"); err != nil {
		return nil, err
	}
	port, metrics, err := freePorts()
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig=" + e.cluster.Kubeconfig,
		fmt.Sprintf("--serverIP=127.0.0.1:%d", port), "--webhookServerHost=127.0.0.1", fmt.Sprintf("--webhookServerPort=%d", port),
		"--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca", "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair",
		"--metricsHost=127.0.0.1", fmt.Sprintf("--metricsPort=%d", metrics), "--controllerRuntimeMetricsAddress=0",
		"--disableLogColor", "-v=1",
	}, extraArgs...)
	p, err := e.cluster.Run("kyverno", bin, []string{
		// What the chart's Deployment sets.
		"KYVERNO_NAMESPACE=kyverno", "KYVERNO_POD_NAME=kyverno-bench", "KYVERNO_SERVICEACCOUNT_NAME=kyverno-admission-controller",
		"KYVERNO_ROLE_NAME=kyverno:admission-controller", "KYVERNO_DEPLOYMENT=kyverno-admission-controller",
		"KYVERNO_SVC=kyverno-svc", "INIT_CONFIG=kyverno", "METRICS_CONFIG=kyverno-metrics",
	}, args...)
	if err != nil {
		return nil, err
	}
	teardown := func() error {
		err := e.kubectl(nil, "delete", "clusterpolicy", name, "--ignore-not-found", "--timeout=30s")
		err = errors.Join(err, p.Stop())
		return errors.Join(err, e.kubectl(nil, "delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "-l", "webhook.kyverno.io/managed-by=kyverno", "--ignore-not-found"))
	}
	// Kyverno's own webhook validates policies: it answers once Kyverno is up.
	if err := retry(ctx, 3*time.Minute, func() error { return e.kubectl([]byte(policy), "apply", "-f", "-") }); err != nil {
		return teardown, fmt.Errorf("%w; end of the Kyverno log:\n%s", err, p.Log())
	}
	return teardown, nil
}

// kyvernoImagesPolicy is the name-based ClusterPolicy: the registries imagegate's bench
// policy allows, and no latest tag.
func kyvernoImagesPolicy() string {
	rule := func(name, message, image string) string {
		return fmt.Sprintf(`  - name: %s
    match:
      any:
      - resources:
          kinds: ["Pod"]
          namespaceSelector:
            matchLabels:
              %s: "true"
    validate:
      failureAction: Enforce
      message: %q
      pattern:
        spec:
          containers:
          - image: %q
          =(initContainers):
          - image: %q
`, name, benchLabel, message, image, image)
	}
	registries := fmt.Sprintf("%s* | %s*", sharedRepo, teamRepo(0))
	return `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: bench-images
spec:
  background: false
  rules:
` + rule("allowed-registries", "images must come from "+sharedRepo+" or "+teamRepo(0), registries) +
		rule("disallow-latest", "the tag latest is not allowed", "!*:latest")
}

// peer returns the binary of a peer, or why it cannot run.
func (e *benchEnv) peer(name, moduleDir string) (string, error) {
	bin := filepath.Join(e.o.root, e.o.peersBin, name)
	if _, err := os.Stat(bin); err != nil {
		return "", skipError{fmt.Errorf("no %s binary (%w): make bench builds it from hack/bench/%s", name, err, name)}
	}
	if moduleDir == "" {
		return "", skipError{fmt.Errorf("-%s-module not set", name)}
	}
	return bin, nil
}

// freePorts returns two free loopback ports: a server's and its health or metrics port.
func freePorts() (int, int, error) {
	a, err := localcluster.FreePort()
	if err != nil {
		return 0, 0, err
	}
	b, err := localcluster.FreePort()
	return a, b, err
}

// retry calls f until it succeeds or limit passes.
func retry(ctx context.Context, limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
