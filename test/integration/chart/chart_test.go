// Package chart tests the Helm chart in dist/chart with Helm's own library (what `helm lint`
// and `helm template` run): it lints, it renders exactly what config/ renders with kustomize
// under the defaults (so the two installations cannot drift apart), each value does what
// values.yaml says, and bad values are refused with a message that names them.
package chart

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/internal/credentials"
)

const (
	chartDir  = "../../../dist/chart"
	namespace = "imagegate-system"
)

// object is one rendered Kubernetes object.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

func (o object) meta() map[string]any { m, _ := o["metadata"].(map[string]any); return m }

func (o object) name() string { s, _ := o.meta()["name"].(string); return s }

func (o object) key() string {
	ns, _ := o.meta()["namespace"].(string)
	return o.kind() + " " + ns + "/" + o.name()
}

// kubeVersion is the Kubernetes version rendered for: this module's client-go (Helm's library
// otherwise assumes 1.20, older than the chart's kubeVersion).
func kubeVersion(t *testing.T) *common.KubeVersion {
	t.Helper()
	v, err := common.ParseKubeVersion("v1.37.0")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading %s: %v", chartDir, err)
	}
	return c
}

// render runs what `helm template imagegate dist/chart -n imagegate-system --set ...` runs.
func render(t *testing.T, set ...string) ([]object, error) {
	t.Helper()
	vals := map[string]any{}
	for _, s := range set {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return renderValues(t, vals)
}

// renderValues renders the chart with a values file's contents.
func renderValues(t *testing.T, vals map[string]any) ([]object, error) {
	t.Helper()
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.ReleaseName = "imagegate"
	install.Namespace = namespace
	install.IncludeCRDs = true
	install.KubeVersion = kubeVersion(t)
	rel, err := install.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		t.Fatalf("helm returned a %T", rel)
	}
	return parse(t, []byte(r.Manifest)), nil
}

func mustRender(t *testing.T, set ...string) []object {
	t.Helper()
	objs, err := render(t, set...)
	if err != nil {
		t.Fatalf("helm template with %v: %v", set, err)
	}
	return objs
}

func parse(t *testing.T, stream []byte) []object {
	t.Helper()
	var objs []object
	for _, doc := range bytes.Split(stream, []byte("\n---")) {
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		if len(o) > 0 {
			objs = append(objs, o)
		}
	}
	return objs
}

// kustomize renders a folder of config/ as `kubectl apply -k` would.
func kustomize(t *testing.T, dir string) []object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join("../../../config", dir))
	if err != nil {
		t.Fatalf("kustomize build config/%s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, out)
}

// helmOnly are the labels and annotations the chart adds to every object (and keeps CRDs
// with); everything else must be as config/ has it.
var helmOnly = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/part-of", "helm.sh/resource-policy"}

func withoutHelmMetadata(o object) object {
	out := object{}
	b, _ := json.Marshal(o)
	_ = json.Unmarshal(b, &out)
	meta := out.meta()
	for _, field := range []string{"labels", "annotations"} {
		m, _ := meta[field].(map[string]any)
		for _, k := range helmOnly {
			delete(m, k)
		}
		if m != nil && len(m) == 0 {
			delete(meta, field)
		}
	}
	return out
}

func index(objs []object) map[string]object {
	m := map[string]object{}
	for _, o := range objs {
		m[o.key()] = o
	}
	return m
}

// sameAsKustomize fails unless the chart's objects are config/<dir>'s, one for one.
func sameAsKustomize(t *testing.T, chart []object, dir string) {
	t.Helper()
	want := map[string]object{}
	for _, o := range kustomize(t, dir) {
		if o.kind() == "Namespace" { // helm install --create-namespace makes it
			continue
		}
		want[o.key()] = o
	}
	got := map[string]object{}
	for _, o := range chart {
		got[o.key()] = withoutHelmMetadata(o)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("config/%s renders %s; the chart does not", dir, k)
			continue
		}
		if d := cmp.Diff(w, g); d != "" {
			t.Errorf("%s differs between config/%s (-) and the chart (+):\n%s", k, dir, d)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("the chart renders %s; config/%s does not", k, dir)
		}
	}
}

func TestChartLints(t *testing.T) {
	lint := action.NewLint()
	lint.Strict = true
	lint.Namespace = namespace
	lint.KubeVersion = kubeVersion(t)
	res := lint.Run([]string{chartDir}, map[string]any{"image": map[string]any{"repository": "registry.example.com/imagegate"}})
	for _, m := range res.Messages {
		t.Logf("helm lint: %s", m)
	}
	for _, err := range res.Errors {
		t.Errorf("helm lint --strict: %v", err)
	}
	if res.TotalChartsLinted != 1 {
		t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
	}
}

// With its defaults (and the image config/manager names), the chart installs what `make
// deploy` installs, object for object and field for field.
func TestChartDefaultsAreConfigDefault(t *testing.T) {
	sameAsKustomize(t, mustRender(t, "image.repository=ghcr.io/imagegate/imagegate", "image.tag=v0.1.0"), "default")
}

func TestChartPodPullSecretsIsConfigPodPullSecrets(t *testing.T) {
	sameAsKustomize(t, mustRender(t, "image.repository=ghcr.io/imagegate/imagegate", "image.tag=v0.1.0", "rbac.podPullSecrets=true", "webhook.clientCA.configMap=imagegate-webhook-client-ca"), "pod-pull-secrets")
}

func TestChartClientCAIsConfigWebhookClientCA(t *testing.T) {
	sameAsKustomize(t, mustRender(t, "image.repository=ghcr.io/imagegate/imagegate", "image.tag=v0.1.0", "webhook.clientCA.configMap=imagegate-webhook-client-ca"), "webhook-client-ca")
}

// A review names the Pod's namespace and Secrets: Pods' pull secrets are used only when the
// webhook port authenticates the apiserver, and the chart says so rather than render.
func TestChartPodPullSecretsNeedClientCA(t *testing.T) {
	_, err := render(t, "image.repository=ghcr.io/imagegate/imagegate", "rbac.podPullSecrets=true")
	if err == nil || !strings.Contains(err.Error(), "webhook.clientCA.configMap") {
		t.Fatalf("rendering rbac.podPullSecrets without webhook.clientCA: %v, want an error naming webhook.clientCA.configMap", err)
	}
}

// The chart cannot read config/, so hack/sync-chart.sh copies what they share; `make
// manifests` runs it. This says which copy is stale.
func TestChartFilesAreConfigs(t *testing.T) {
	pairs := map[string]string{
		"config/prometheus/rules.yaml":                    "dist/chart/files/prometheus/rules.yaml",
		"config/grafana/imagegate.json":                   "dist/chart/files/grafana/imagegate.json",
		"config/admission-policies/pattern-warnings.yaml": "dist/chart/files/admission-policies/pattern-warnings.yaml",
	}
	crds, err := filepath.Glob("../../../config/crd/bases/*.yaml")
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	copies, _ := filepath.Glob("../../../dist/chart/files/crds/*.yaml")
	if len(copies) != len(crds) {
		t.Errorf("dist/chart/files/crds has %d CRDs, config/crd/bases %d: run `make manifests`", len(copies), len(crds))
	}
	for _, c := range crds {
		pairs[strings.TrimPrefix(c, "../../../")] = "dist/chart/files/crds/" + filepath.Base(c)
	}
	for src, dst := range pairs {
		a, err := os.ReadFile("../../../" + src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile("../../../" + dst)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s is not a copy of %s: run `make manifests`", dst, src)
		}
	}
}

func TestChartCRDsAreKeptAtUninstall(t *testing.T) {
	crds := 0
	for _, o := range mustRender(t, "image.repository=r") {
		if o.kind() != "CustomResourceDefinition" {
			continue
		}
		crds++
		if a, _ := o.meta()["annotations"].(map[string]any); a["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep; helm uninstall would delete every policy", o.name())
		}
	}
	if crds != 3 {
		t.Errorf("the chart renders %d CRDs, want 3", crds)
	}
	for _, o := range mustRender(t, "image.repository=r", "crds.install=false") {
		if o.kind() == "CustomResourceDefinition" {
			t.Errorf("crds.install=false still renders CRD %s", o.name())
		}
	}
}

// webhook.pinTags=false leaves the pinning webhook out, and only it.
func TestChartWithoutPinning(t *testing.T) {
	with, without := index(mustRender(t, "image.repository=r")), index(mustRender(t, "image.repository=r", "webhook.pinTags=false"))
	for k := range with {
		if _, ok := without[k]; !ok && k != "MutatingWebhookConfiguration /imagegate-mutating-webhook-configuration" {
			t.Errorf("webhook.pinTags=false also drops %s", k)
		}
	}
	if _, ok := without["MutatingWebhookConfiguration /imagegate-mutating-webhook-configuration"]; ok {
		t.Error("webhook.pinTags=false still renders the pinning webhook")
	}
}

// Without cert-manager the chart makes the CA and the serving certificate: the certificate
// names the webhook Service, is issued by the CA every webhook trusts, and lasts
// selfSignedCertificate.validityDays.
func TestChartWithoutCertManagerIssuesItsOwnCertificate(t *testing.T) {
	objs := index(mustRender(t, "image.repository=r", "certManager.enabled=false", "selfSignedCertificate.validityDays=30"))
	for k, o := range objs {
		if strings.Contains(o["apiVersion"].(string), "cert-manager.io") {
			t.Errorf("certManager.enabled=false still renders %s", k)
		}
		if a, _ := o.meta()["annotations"].(map[string]any); a["cert-manager.io/inject-ca-from"] != nil {
			t.Errorf("certManager.enabled=false: %s still asks cert-manager to inject its CA", k)
		}
	}
	secret := func(name string) map[string][]byte {
		t.Helper()
		o, ok := objs["Secret "+namespace+"/"+name]
		if !ok {
			t.Fatalf("no Secret %s", name)
		}
		out := map[string][]byte{}
		for k, v := range o["data"].(map[string]any) {
			b, err := base64.StdEncoding.DecodeString(v.(string))
			if err != nil {
				t.Fatalf("Secret %s, %s: %v", name, k, err)
			}
			out[k] = b
		}
		return out
	}
	ca, serving := secret("imagegate-ca"), secret("webhook-server-cert")
	if a := objs["Secret "+namespace+"/imagegate-ca"].meta()["annotations"].(map[string]any); a["helm.sh/resource-policy"] != "keep" {
		t.Error("the CA Secret is not kept at uninstall: a reinstall would leave old caBundles untrusted")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca["tls.crt"]) {
		t.Fatal("the CA Secret's tls.crt is not a PEM certificate")
	}
	if !bytes.Equal(serving["ca.crt"], ca["tls.crt"]) {
		t.Error("webhook-server-cert's ca.crt is not the CA")
	}
	block, _ := pem.Decode(serving["tls.crt"])
	if block == nil {
		t.Fatal("webhook-server-cert's tls.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, dns := range []string{"imagegate-webhook-service.imagegate-system.svc", "imagegate-webhook-service.imagegate-system.svc.cluster.local"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: dns, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("the serving certificate does not verify for %s against the CA: %v", dns, err)
		}
	}
	if life := time.Until(cert.NotAfter); life < 29*24*time.Hour || life > 31*24*time.Hour {
		t.Errorf("the serving certificate lasts %s, want 30 days", life)
	}
	webhooks := 0
	for _, kind := range []string{"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"} {
		for _, o := range objs {
			if o.kind() != kind {
				continue
			}
			for _, wh := range o["webhooks"].([]any) {
				webhooks++
				cc := wh.(map[string]any)["clientConfig"].(map[string]any)
				b, _ := base64.StdEncoding.DecodeString(fmt.Sprint(cc["caBundle"]))
				if !bytes.Equal(b, ca["tls.crt"]) {
					t.Errorf("webhook %v's caBundle is not the CA", wh.(map[string]any)["name"])
				}
			}
		}
	}
	if webhooks != 5 {
		t.Errorf("%d webhooks, want 5", webhooks)
	}
}

func TestChartValues(t *testing.T) {
	objs := index(mustRender(t,
		"image.repository=registry.example.com/imagegate",
		"image.digest=sha256:"+strings.Repeat("ab", 32),
		"image.tag=ignored",
		"replicaCount=3",
		"resources.limits.memory=1Gi",
		"extraArgs={--audit-interval=1m}",
		"webhook.timeoutSeconds=7",
		"webhook.failurePolicy=Ignore",
		"webhook.workloads.timeoutSeconds=3",
		"webhook.excludedNamespaces={kube-system,monitoring}",
		"networkPolicy.enabled=false",
		"rbac.userRoles=false",
		"podDisruptionBudget.enabled=false",
		"metrics.serviceMonitor.enabled=true",
		"metrics.readerServiceAccount.name=prometheus",
		"metrics.readerServiceAccount.namespace=monitoring",
		"prometheusRule.enabled=true",
		"prometheusRule.labels.release=kube-prometheus",
		"grafanaDashboard.enabled=true",
	))
	dep := objs["Deployment "+namespace+"/imagegate-controller-manager"]
	spec := dep["spec"].(map[string]any)
	if spec["replicas"] != float64(3) {
		t.Errorf("replicas %v, want 3", spec["replicas"])
	}
	container := spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	if img := container["image"]; img != "registry.example.com/imagegate@sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("image %v: a digest must win over the tag", img)
	}
	args := fmt.Sprint(container["args"])
	if !strings.HasSuffix(args, " --audit-interval=1m]") {
		t.Errorf("args %s do not end with extraArgs", args)
	}
	// The audit and ImageReview leave alone what the webhooks do not cover.
	if !strings.Contains(args, " --excluded-namespaces=imagegate-system,kube-system,monitoring ") {
		t.Errorf("args %s do not pass webhook.excludedNamespaces to the manager", args)
	}
	if mem := container["resources"].(map[string]any)["limits"].(map[string]any)["memory"]; mem != "1Gi" {
		t.Errorf("memory limit %v", mem)
	}

	vwc := objs["ValidatingWebhookConfiguration /imagegate-validating-webhook-configuration"]
	for _, w := range vwc["webhooks"].([]any) {
		wh := w.(map[string]any)
		switch wh["name"] {
		case "pods.imagegate.io":
			if wh["timeoutSeconds"] != float64(7) || wh["failurePolicy"] != "Ignore" {
				t.Errorf("pods webhook: timeout %v, failurePolicy %v", wh["timeoutSeconds"], wh["failurePolicy"])
			}
			got := fmt.Sprint(wh["namespaceSelector"])
			if want := "map[matchExpressions:[map[key:kubernetes.io/metadata.name operator:NotIn values:[imagegate-system kube-system monitoring]]]]"; got != want {
				t.Errorf("pods webhook namespaceSelector\n got %s\nwant %s (the release namespace is always excluded)", got, want)
			}
		case "workloads.imagegate.io":
			if wh["timeoutSeconds"] != float64(3) {
				t.Errorf("workloads webhook timeout %v", wh["timeoutSeconds"])
			}
		case "exceptions.imagegate.io":
			if wh["failurePolicy"] != "Fail" {
				t.Errorf("the exception webhook must fail closed whatever webhook.failurePolicy says; it is %v", wh["failurePolicy"])
			}
		}
	}
	for k := range objs {
		for _, gone := range []string{"NetworkPolicy ", "PodDisruptionBudget ", "ClusterRole /imagegate-imagepolicy-editor-role", "ClusterRole /imagegate-imagepolicyexception-granter-role"} {
			if strings.HasPrefix(k, gone) {
				t.Errorf("%s is rendered though its value turns it off", k)
			}
		}
	}
	if _, ok := objs["ServiceMonitor "+namespace+"/imagegate-controller-manager"]; !ok {
		t.Error("metrics.serviceMonitor.enabled renders no ServiceMonitor")
	}
	if b, ok := objs["ClusterRoleBinding /imagegate-metrics-reader"]; !ok || fmt.Sprint(b["subjects"]) != "[map[kind:ServiceAccount name:prometheus namespace:monitoring]]" {
		t.Errorf("metrics.readerServiceAccount: binding %v", b)
	}

	// The PrometheusRule holds config/prometheus/rules.yaml's groups, unchanged.
	rule, ok := objs["PrometheusRule "+namespace+"/imagegate"]
	if !ok {
		t.Fatal("prometheusRule.enabled renders no PrometheusRule")
	}
	if rule.meta()["labels"].(map[string]any)["release"] != "kube-prometheus" {
		t.Error("prometheusRule.labels are not on the PrometheusRule")
	}
	var rules map[string]any
	b, err := os.ReadFile("../../../config/prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(rules, rule["spec"]); d != "" {
		t.Errorf("the PrometheusRule's spec is not config/prometheus/rules.yaml (-file +chart):\n%s", d)
	}

	// The dashboard ConfigMap holds config/grafana/imagegate.json, byte for byte.
	cm, ok := objs["ConfigMap "+namespace+"/imagegate-dashboard"]
	if !ok {
		t.Fatal("grafanaDashboard.enabled renders no ConfigMap")
	}
	if cm.meta()["labels"].(map[string]any)["grafana_dashboard"] != "1" {
		t.Error("the dashboard ConfigMap lacks the label Grafana's sidecar looks for")
	}
	dash, err := os.ReadFile("../../../config/grafana/imagegate.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := cm["data"].(map[string]any)["imagegate.json"]; got != strings.TrimSuffix(string(dash), "\n") {
		t.Error("the dashboard ConfigMap does not hold config/grafana/imagegate.json")
	}
}

// Bad values are refused before anything reaches the cluster, and the error names the value.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{nil, "image.repository is required"},
		{[]string{"image.repository=r", "webhook.failurePolicy=Sometimes"}, "/webhook/failurePolicy"},
		{[]string{"image.repository=r", "webhook.timeoutSeconds=31"}, "/webhook/timeoutSeconds"},
		{[]string{"image.repository=r", "image.digest=sha256:abc"}, "/image/digest"},
		{[]string{"image.repository=r", "replicas=3"}, "additional properties 'replicas' not allowed"},
		{[]string{"image.repository=r", "webhook.excludedNamespaces={Kube_System}"}, "/webhook/excludedNamespaces/0"},
		{[]string{"image.repository=r", "extraArgs={audit-interval=1m}"}, "/extraArgs/0"},
		{[]string{"image.repository=r", "metrics.enabled=false", "metrics.serviceMonitor.enabled=true"}, "metrics.serviceMonitor.enabled needs metrics.enabled"},
		{[]string{"image.repository=r", "metrics.readerServiceAccount.name=prometheus"}, "metrics.readerServiceAccount.namespace is required"},
	} {
		_, err := render(t, tc.set...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %v: error %v, want one containing %q", tc.set, err, tc.want)
		}
	}
}

// Every imagegate metric the alerts and the dashboard query is one the manager exports: a
// renamed metric must not leave an alert that can never fire.
func TestMonitoringQueriesExistingMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	var queries []string
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	b, err := os.ReadFile("../../../config/prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			queries = append(queries, "alert "+r.Alert+": "+r.Expr)
		}
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err = os.ReadFile("../../../config/grafana/imagegate.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("config/grafana/imagegate.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			queries = append(queries, "panel "+p.Title+": "+q.Expr)
		}
	}
	used := map[string]bool{}
	for _, q := range queries {
		for _, m := range metricName.FindAllString(q, -1) {
			base := m
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if s, ok := strings.CutSuffix(m, suffix); ok && exported[s] {
					base = s
				}
			}
			used[base] = true
			if !exported[base] {
				t.Errorf("%s queries %s, which the manager does not export", strings.SplitN(q, ":", 2)[0], m)
			}
		}
	}
	// The alerts the issue asks for are there.
	for _, alert := range []string{"ImagegateWebhookErrors", "ImagegateWebhookLatencyNearTimeout", "ImagegateNoReadyReplica", "ImagegateServingCertificateExpiresSoon", "ImagegateExceptionExpiresSoon", "ImagegateRunningImageScanExpiresSoon"} {
		if !slices.ContainsFunc(queries, func(q string) bool { return strings.HasPrefix(q, "alert "+alert+":") }) {
			t.Errorf("no alert %s", alert)
		}
	}
	for _, m := range []string{"imagegate_admission_decisions_total", "imagegate_policy_violations_total", "imagegate_evaluation_duration_seconds", "imagegate_verify_cache_lookups_total", "imagegate_registry_operation_duration_seconds", "imagegate_audit_violating_pods"} {
		if !used[m] {
			t.Errorf("neither the dashboard nor the alerts show %s", m)
		}
	}
}

// A namespace excluded by name that does not exist can be created by anyone allowed to create
// namespaces, and would be unguarded: cert-manager's is excluded only when cert-manager is in
// use, in the webhooks' namespaceSelector and in the manager's --excluded-namespaces alike.
func TestCertManagerNamespaceExcludedOnlyWithCertManager(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want bool
	}{
		{[]string{"image.repository=r"}, true},
		{[]string{"image.repository=r", "certManager.enabled=false"}, false},
	} {
		rendered, err := yaml.Marshal(mustRender(t, c.set...))
		if err != nil {
			t.Fatal(err)
		}
		text := string(rendered)
		if got := strings.Contains(text, "- cert-manager\n"); got != c.want {
			t.Errorf("%v: cert-manager in a namespaceSelector: %v, want %v", c.set, got, c.want)
		}
		if !c.want && !strings.Contains(text, "--excluded-namespaces="+namespace+",kube-system,kube-node-lease") {
			t.Errorf("%v: the manager's --excluded-namespaces still names cert-manager, or is missing", c.set)
		}
	}
}

// credentialProviders: the chart's ConfigMap is a CredentialProviderConfig the manager reads,
// the plugins come from the nodes' directory read-only, and the ServiceAccount carries the
// cloud identity's annotation.
func TestChartCredentialProviders(t *testing.T) {
	set := []string{
		"image.repository=ghcr.io/imagegate/imagegate",
		"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/imagegate",
		"credentialProviders.config.apiVersion=kubelet.config.k8s.io/v1",
		"credentialProviders.config.kind=CredentialProviderConfig",
		"credentialProviders.config.providers[0].name=ecr-credential-provider",
		"credentialProviders.config.providers[0].matchImages[0]=*.dkr.ecr.*.amazonaws.com",
		"credentialProviders.config.providers[0].defaultCacheDuration=12h",
		"credentialProviders.config.providers[0].apiVersion=credentialprovider.kubelet.k8s.io/v1",
	}
	if _, err := render(t, set...); err == nil || !strings.Contains(err.Error(), "credentialProviders.binDir.hostPath") {
		t.Fatalf("config without binDir: %v, want an error naming credentialProviders.binDir.hostPath", err)
	}
	objs := index(mustRender(t, append(set, "credentialProviders.binDir.hostPath=/etc/eks/image-credential-provider")...))

	sa := objs["ServiceAccount "+namespace+"/imagegate-controller-manager"]
	if got := sa["metadata"].(map[string]any)["annotations"]; fmt.Sprint(got) != "map[eks.amazonaws.com/role-arn:arn:aws:iam::111122223333:role/imagegate]" {
		t.Errorf("ServiceAccount annotations %v", got)
	}
	cm := objs["ConfigMap "+namespace+"/imagegate-credential-providers"]
	if cm == nil {
		t.Fatal("no ConfigMap imagegate-credential-providers")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(cm["data"].(map[string]any)["config.yaml"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ecr-credential-provider"), []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := credentials.Load(config, dir); err != nil {
		t.Errorf("the manager does not read the chart's config: %v", err)
	}

	pod := objs["Deployment "+namespace+"/imagegate-controller-manager"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	container := pod["containers"].([]any)[0].(map[string]any)
	args := fmt.Sprint(container["args"])
	for _, want := range []string{"--image-credential-provider-config=/etc/imagegate/credential-providers/config.yaml", "--image-credential-provider-bin-dir=/etc/imagegate/credential-providers/bin"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %s lack %s", args, want)
		}
	}
	if got := fmt.Sprint(pod["volumes"]); !strings.Contains(got, "hostPath:map[path:/etc/eks/image-credential-provider type:Directory]") {
		t.Errorf("volumes %s", got)
	}
	if got := fmt.Sprint(container["volumeMounts"]); !strings.Contains(got, "mountPath:/etc/imagegate/credential-providers/bin name:credential-provider-bin readOnly:true") {
		t.Errorf("volumeMounts %s", got)
	}
}

func TestChartExtraEnv(t *testing.T) {
	set := []string{
		"image.repository=ghcr.io/imagegate/imagegate",
		"extraEnv[0].name=VAULT_ADDR", "extraEnv[0].value=https://vault.example:8200",
		"extraEnv[1].name=VAULT_TOKEN", "extraEnv[1].valueFrom.secretKeyRef.name=vault-token", "extraEnv[1].valueFrom.secretKeyRef.key=token",
	}
	objs := index(mustRender(t, set...))
	pod := objs["Deployment "+namespace+"/imagegate-controller-manager"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	env := fmt.Sprint(pod["containers"].([]any)[0].(map[string]any)["env"])
	for _, want := range []string{"name:POD_NAMESPACE", "map[name:VAULT_ADDR value:https://vault.example:8200]", "map[name:VAULT_TOKEN valueFrom:map[secretKeyRef:map[key:token name:vault-token]]]"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %s lacks %s", env, want)
		}
	}
	if _, err := render(t, "image.repository=ghcr.io/imagegate/imagegate", "extraEnv[0].name=NOT VALID"); err == nil || !strings.Contains(err.Error(), "extraEnv") {
		t.Errorf("an invalid variable name: %v, want an error naming extraEnv", err)
	}
}

func TestChartCloudRegistryCredentials(t *testing.T) {
	objs := index(mustRender(t, "image.repository=ghcr.io/imagegate/imagegate", "cloudRegistryCredentials={ecr,acr}"))
	pod := objs["Deployment "+namespace+"/imagegate-controller-manager"]["spec"].(map[string]any)["template"].(map[string]any)
	args := fmt.Sprint(pod["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["args"])
	if !strings.Contains(args, "--cloud-registry-credentials=ecr,acr") {
		t.Errorf("args %s lack --cloud-registry-credentials=ecr,acr", args)
	}
	if _, err := render(t, "image.repository=ghcr.io/imagegate/imagegate", "cloudRegistryCredentials={quay}"); err == nil || !strings.Contains(err.Error(), "cloudRegistryCredentials") {
		t.Errorf("an unknown cloud: %v, want an error naming cloudRegistryCredentials", err)
	}
}
