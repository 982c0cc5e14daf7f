package config

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
)

// The installation that `make deploy` applies, rendered by the kustomize in kubectl.
var _ = Describe("config/default", func() {
	It("renders a complete installation with cert-manager CA injection", func() {
		out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize", filepath.Join(root, "config", "default")).Output()
		Expect(err).NotTo(HaveOccurred())
		type object struct {
			Kind     string
			Metadata struct {
				Name        string
				Namespace   string
				Annotations map[string]string
			}
			Spec struct {
				DNSNames   []string `json:"dnsNames"`
				SecretName string   `json:"secretName"`
			}
			Webhooks []struct {
				Name              string
				FailurePolicy     string `json:"failurePolicy"`
				TimeoutSeconds    int    `json:"timeoutSeconds"`
				NamespaceSelector any    `json:"namespaceSelector"`
				MatchConditions   []any  `json:"matchConditions"`
				ClientConfig      struct {
					Service struct{ Name, Namespace string }
				} `json:"clientConfig"`
			}
		}
		byKind := map[string][]object{}
		for _, doc := range bytes.Split(out, []byte("\n---\n")) {
			var o object
			Expect(yaml.Unmarshal(doc, &o)).To(Succeed())
			byKind[o.Kind] = append(byKind[o.Kind], o)
		}
		for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service", "Issuer", "Certificate", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"} {
			Expect(byKind).To(HaveKey(kind))
		}
		Expect(byKind["CustomResourceDefinition"]).To(HaveLen(3))

		var cert object
		for _, c := range byKind["Certificate"] {
			if c.Metadata.Name == "imagegate-serving-cert" {
				cert = c
			}
		}
		Expect(cert.Metadata.Namespace).To(Equal("imagegate-system"))
		Expect(cert.Spec.DNSNames).To(Equal([]string{"imagegate-webhook-service.imagegate-system.svc", "imagegate-webhook-service.imagegate-system.svc.cluster.local"}))

		services := map[string]object{}
		for _, svc := range byKind["Service"] {
			services[svc.Metadata.Name] = svc
		}
		Expect(services).To(HaveKey("imagegate-webhook-service"))
		Expect(services).To(HaveKey("imagegate-controller-manager-metrics-service"), "Prometheus scrapes the metrics through a Service")
		vwc := byKind["ValidatingWebhookConfiguration"][0]
		Expect(vwc.Metadata.Annotations).To(HaveKeyWithValue("cert-manager.io/inject-ca-from", "imagegate-system/"+cert.Metadata.Name))
		Expect(vwc.Webhooks).To(HaveLen(4))
		// The policy change preflight: warnings only, so it fails open.
		pre := vwc.Webhooks[3]
		Expect(pre.Name).To(Equal("preflight.imagegate.io"))
		Expect(pre.FailurePolicy).To(Equal("Ignore"))
		// Exceptions: validated fail-closed; no namespace is left out (an exception in
		// imagegate-system exempts from nothing there, but must still be valid).
		exc := vwc.Webhooks[2]
		Expect(exc.Name).To(Equal("exceptions.imagegate.io"))
		Expect(exc.FailurePolicy).To(Equal("Fail"))
		Expect(exc.ClientConfig.Service.Name).To(Equal("imagegate-webhook-service"))
		Expect(exc.ClientConfig.Service.Namespace).To(Equal("imagegate-system"))
		// Pods fail closed; workloads fail open, since their Pods are checked anyway.
		// The Pod webhooks wait up to 15 s: what verifying signatures in a slow registry may
		// take (the request's own deadline ends registry calls 0.5 s before).
		mwc := byKind["MutatingWebhookConfiguration"][0]
		Expect(mwc.Metadata.Annotations).To(HaveKeyWithValue("cert-manager.io/inject-ca-from", "imagegate-system/"+cert.Metadata.Name))
		Expect(mwc.Webhooks).To(HaveLen(1))
		for _, want := range []struct {
			name, failurePolicy string
			timeout             int
			wh                  int
			cfg                 object
			conditions          int // the pinning webhook's second: some image has no digest
		}{{"pods.imagegate.io", "Fail", 15, 0, vwc, 1}, {"workloads.imagegate.io", "Ignore", 5, 1, vwc, 1}, {"pin.pods.imagegate.io", "Fail", 15, 0, mwc, 2}} {
			wh := want.cfg.Webhooks[want.wh]
			Expect(wh.Name).To(Equal(want.name))
			Expect(wh.FailurePolicy).To(Equal(want.failurePolicy))
			Expect(wh.TimeoutSeconds).To(Equal(want.timeout))
			Expect(wh.ClientConfig.Service.Name).To(Equal("imagegate-webhook-service"))
			Expect(wh.ClientConfig.Service.Namespace).To(Equal("imagegate-system"))
			Expect(wh.NamespaceSelector).NotTo(BeNil(), want.name)
			Expect(wh.MatchConditions).To(HaveLen(want.conditions), want.name)
		}
		Expect(string(out)).To(ContainSubstring("secretName: " + cert.Spec.SecretName))
	})
})

var _ = Describe("config/default certificates", func() {
	It("issue the serving certificate from a CA of imagegate's own that outlives it, so what trusts the CA survives renewals", func() {
		type cert struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				IsCA       bool                  `json:"isCA"`
				SecretName string                `json:"secretName"`
				Duration   string                `json:"duration"`
				IssuerRef  struct{ Name string } `json:"issuerRef"`
				PrivateKey struct {
					RotationPolicy string `json:"rotationPolicy"`
				} `json:"privateKey"`
				CA *struct {
					SecretName string `json:"secretName"`
				} `json:"ca"`
				SelfSigned *struct{} `json:"selfSigned"`
			}
		}
		objs := map[string]cert{}
		for _, doc := range renderDefault() {
			var c cert
			Expect(yaml.Unmarshal(doc, &c)).To(Succeed())
			if c.Kind == "Certificate" || c.Kind == "Issuer" {
				objs[c.Kind+"/"+c.Metadata.Name] = c
			}
		}
		serving := objs["Certificate/imagegate-serving-cert"]
		issuer, ok := objs["Issuer/"+serving.Spec.IssuerRef.Name]
		Expect(ok).To(BeTrue(), "the serving certificate's issuer is in the installation")
		Expect(issuer.Spec.CA).NotTo(BeNil(), "the serving certificate comes from a CA issuer, not a self-signed one")
		var ca cert
		for _, c := range objs {
			if c.Kind == "Certificate" && c.Spec.SecretName == issuer.Spec.CA.SecretName {
				ca = c
			}
		}
		Expect(ca.Spec.IsCA).To(BeTrue())
		Expect(ca.Spec.PrivateKey.RotationPolicy).To(Equal("Never"), "renewing the CA keeps its key")
		Expect(objs["Issuer/"+ca.Spec.IssuerRef.Name].Spec.SelfSigned).NotTo(BeNil())
		caLife, err := time.ParseDuration(ca.Spec.Duration)
		Expect(err).NotTo(HaveOccurred())
		servingLife, err := time.ParseDuration(serving.Spec.Duration)
		Expect(err).NotTo(HaveOccurred())
		Expect(caLife).To(BeNumerically(">=", 10*servingLife))
	})
})

var _ = Describe("config/imagepolicywebhook/certificate_patch.yaml", func() {
	It("adds the apiserver's address to the serving certificate when added to config/default as its comment says", func() {
		dir := GinkgoT().TempDir()
		Expect(os.CopyFS(dir, os.DirFS(filepath.Join(root, "config")))).To(Succeed())
		patch, err := os.ReadFile(filepath.Join(dir, "imagepolicywebhook", "certificate_patch.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(filepath.Join(dir, "default", "certificate_patch.yaml"), patch, 0o600)).To(Succeed())
		k, err := os.ReadFile(filepath.Join(dir, "default", "kustomization.yaml"))
		Expect(err).NotTo(HaveOccurred())
		k = bytes.Replace(k, []byte("\npatches:\n"), []byte("\npatches:\n- path: certificate_patch.yaml\n  target:\n    kind: Certificate\n    name: serving-cert\n"), 1)
		Expect(os.WriteFile(filepath.Join(dir, "default", "kustomization.yaml"), k, 0o600)).To(Succeed())
		out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize", filepath.Join(dir, "default")).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		for _, doc := range bytes.Split(out, []byte("\n---\n")) {
			var cert struct {
				Kind     string
				Metadata struct{ Name string }
				Spec     struct {
					DNSNames    []string `json:"dnsNames"`
					IPAddresses []string `json:"ipAddresses"`
				}
			}
			Expect(yaml.Unmarshal(doc, &cert)).To(Succeed())
			if cert.Kind == "Certificate" && cert.Metadata.Name == "imagegate-serving-cert" {
				Expect(cert.Spec.DNSNames).To(ContainElements("imagegate-webhook-service.imagegate-system.svc", "imagegate.example.com"))
				Expect(cert.Spec.IPAddresses).To(Equal([]string{"192.0.2.10"}))
				return
			}
		}
		Fail("no serving Certificate rendered")
	})
})

var _ = Describe("config/uninstall", func() {
	It("removes everything but the CRDs, so that the policies survive an uninstall", func() {
		out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize", filepath.Join(root, "config", "uninstall")).Output()
		Expect(err).NotTo(HaveOccurred())
		kinds := map[string]int{}
		for _, doc := range bytes.Split(out, []byte("\n---\n")) {
			var o struct{ Kind string }
			Expect(yaml.Unmarshal(doc, &o)).To(Succeed())
			kinds[o.Kind]++
		}
		Expect(kinds).NotTo(HaveKey("CustomResourceDefinition"))
		for _, kind := range []string{"ValidatingWebhookConfiguration", "Deployment", "Namespace", "ClusterRole", "Certificate"} {
			Expect(kinds).To(HaveKey(kind))
		}
		total := 0
		for _, doc := range renderDefault() {
			if !bytes.Contains(doc, []byte("kind: CustomResourceDefinition")) {
				total++
			}
		}
		n := 0
		for _, c := range kinds {
			n += c
		}
		Expect(n).To(Equal(total), "everything config/default installs but the CRDs")
	})
})

// renderDefault renders config/default and returns its documents.
func renderDefault() [][]byte {
	GinkgoHelper()
	out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize", filepath.Join(root, "config", "default")).Output()
	Expect(err).NotTo(HaveOccurred())
	return bytes.Split(out, []byte("\n---\n"))
}

var _ = Describe("config/default hardening", func() {
	It("grants exactly the RBAC in the golden file: privilege creep fails here", func() {
		var rbac [][]byte
		for _, doc := range renderDefault() {
			for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
				if bytes.Contains(doc, []byte("\nkind: "+kind+"\n")) || bytes.HasPrefix(doc, []byte("kind: "+kind+"\n")) {
					rbac = append(rbac, bytes.TrimSpace(doc))
				}
			}
		}
		got := string(bytes.Join(rbac, []byte("\n---\n"))) + "\n"
		golden := filepath.Join("testdata", "rbac.golden.yaml")
		if os.Getenv("UPDATE_GOLDEN") == "1" {
			Expect(os.WriteFile(golden, []byte(got), 0o600)).To(Succeed())
		}
		want, err := os.ReadFile(golden)
		Expect(err).NotTo(HaveOccurred(), "run UPDATE_GOLDEN=1 make test to create it, and review the diff")
		Expect(got).To(Equal(string(want)), "the rendered RBAC changed: review it, then UPDATE_GOLDEN=1 make test")
	})

	It("lets the built-in edit and view roles read imagegate's policies and only admin write ImagePolicies", func() {
		readOnly := []string{"get", "list", "watch"}
		for _, doc := range renderDefault() {
			var role rbacv1.ClusterRole
			Expect(yaml.Unmarshal(doc, &role)).To(Succeed())
			if role.Kind != "ClusterRole" {
				continue
			}
			labels := role.Labels
			for _, rule := range role.Rules {
				if !slices.Contains(rule.APIGroups, imagegatev1alpha1.GroupVersion.Group) {
					continue
				}
				writes := slices.ContainsFunc(rule.Verbs, func(v string) bool { return !slices.Contains(readOnly, v) })
				if labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true" || labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true" {
					Expect(writes).To(BeFalse(), "ClusterRole %s aggregates into edit or view and may %v %v", role.Name, rule.Verbs, rule.Resources)
				}
				if writes && labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true" {
					Expect(rule.Resources).To(ConsistOf("imagepolicies"), "admin of a namespace writes its ImagePolicies, nothing cluster-wide")
				}
			}
		}
	})

	It("runs the manager hardened: replicas, disruption budget, spread, priority, security context, limits, network policy", func() {
		var deploy struct {
			Spec struct {
				Replicas int
				Template struct {
					Spec struct {
						PriorityClassName         string `json:"priorityClassName"`
						Affinity                  map[string]any
						TopologySpreadConstraints []any `json:"topologySpreadConstraints"`
						SecurityContext           struct {
							RunAsNonRoot   bool `json:"runAsNonRoot"`
							SeccompProfile struct{ Type string }
						} `json:"securityContext"`
						Containers []struct {
							SecurityContext struct {
								AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
								ReadOnlyRootFilesystem   bool  `json:"readOnlyRootFilesystem"`
								Capabilities             struct{ Drop []string }
							} `json:"securityContext"`
							Resources struct {
								Requests map[string]string
								Limits   map[string]string
							}
						}
					}
				}
			}
		}
		kinds := map[string]int{}
		for _, doc := range renderDefault() {
			var meta struct{ Kind string }
			Expect(yaml.Unmarshal(doc, &meta)).To(Succeed())
			kinds[meta.Kind]++
			if meta.Kind == "Deployment" {
				Expect(yaml.Unmarshal(doc, &deploy)).To(Succeed())
			}
		}
		Expect(kinds).To(HaveKeyWithValue("PodDisruptionBudget", 1))
		Expect(kinds).To(HaveKeyWithValue("NetworkPolicy", 3))
		s := deploy.Spec.Template.Spec
		Expect(deploy.Spec.Replicas).To(BeNumerically(">=", 2))
		Expect(s.PriorityClassName).To(Equal("system-cluster-critical"))
		Expect(s.Affinity).To(HaveKey("podAntiAffinity"))
		Expect(s.TopologySpreadConstraints).NotTo(BeEmpty())
		Expect(s.SecurityContext.RunAsNonRoot).To(BeTrue())
		Expect(s.SecurityContext.SeccompProfile.Type).To(Equal("RuntimeDefault"))
		Expect(s.Containers).To(HaveLen(1))
		c := s.Containers[0]
		Expect(c.SecurityContext.AllowPrivilegeEscalation).To(HaveValue(BeFalse()))
		Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(c.SecurityContext.Capabilities.Drop).To(Equal([]string{"ALL"}))
		Expect(c.Resources.Requests).To(HaveKey("cpu"))
		Expect(c.Resources.Requests).To(HaveKey("memory"))
		Expect(c.Resources.Limits).To(HaveKey("memory"))
	})
})

var _ = Describe("config/pod-pull-secrets", func() {
	It("adds to config/default only the flag and a get on Secrets and ServiceAccounts, bound to the manager", func() {
		out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize", filepath.Join(root, "config", "pod-pull-secrets")).Output()
		Expect(err).NotTo(HaveOccurred())
		overlay := bytes.Split(out, []byte("\n---\n"))
		base := map[string]bool{}
		for _, doc := range renderDefault() {
			base[string(bytes.TrimSpace(doc))] = true
		}
		var added []string
		for _, doc := range overlay {
			if !base[string(bytes.TrimSpace(doc))] {
				added = append(added, string(doc))
			}
		}
		// The Deployment (one flag more), the ClusterRole and its binding.
		Expect(added).To(HaveLen(3), strings.Join(added, "\n---\n"))
		var role struct {
			Kind  string
			Rules []struct {
				APIGroups []string `json:"apiGroups"`
				Resources []string
				Verbs     []string
			}
		}
		var binding struct {
			Kind     string
			RoleRef  struct{ Name string } `json:"roleRef"`
			Subjects []struct{ Name, Namespace string }
		}
		var deploy string
		for _, doc := range added {
			var meta struct{ Kind string }
			Expect(yaml.Unmarshal([]byte(doc), &meta)).To(Succeed())
			switch meta.Kind {
			case "ClusterRole":
				Expect(yaml.Unmarshal([]byte(doc), &role)).To(Succeed())
			case "ClusterRoleBinding":
				Expect(yaml.Unmarshal([]byte(doc), &binding)).To(Succeed())
			case "Deployment":
				deploy = doc
			}
		}
		Expect(role.Rules).To(HaveLen(1))
		Expect(role.Rules[0].APIGroups).To(Equal([]string{""}))
		Expect(role.Rules[0].Resources).To(ConsistOf("secrets", "serviceaccounts"))
		Expect(role.Rules[0].Verbs).To(Equal([]string{"get"}))
		Expect(binding.RoleRef.Name).To(Equal("imagegate-pod-pull-secrets-reader"))
		Expect(binding.Subjects).To(HaveLen(1))
		Expect(binding.Subjects[0].Name).To(Equal("imagegate-controller-manager"))
		Expect(binding.Subjects[0].Namespace).To(Equal("imagegate-system"))
		Expect(deploy).To(ContainSubstring("- --pull-secrets-from-pods"))
	})
})
