package v1alpha1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"
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
		for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service", "Issuer", "Certificate", "ValidatingWebhookConfiguration"} {
			Expect(byKind).To(HaveKey(kind))
		}
		Expect(byKind["CustomResourceDefinition"]).To(HaveLen(2))

		cert := byKind["Certificate"][0]
		Expect(cert.Metadata.Namespace).To(Equal("imagegate-system"))
		Expect(cert.Spec.DNSNames).To(Equal([]string{"imagegate-webhook-service.imagegate-system.svc", "imagegate-webhook-service.imagegate-system.svc.cluster.local"}))

		vwc := byKind["ValidatingWebhookConfiguration"][0]
		Expect(vwc.Metadata.Annotations).To(HaveKeyWithValue("cert-manager.io/inject-ca-from", "imagegate-system/"+cert.Metadata.Name))
		Expect(vwc.Webhooks).To(HaveLen(2))
		// Pods fail closed; workloads fail open, since their Pods are checked anyway.
		for i, want := range []struct{ name, failurePolicy string }{{"pods.imagegate.io", "Fail"}, {"workloads.imagegate.io", "Ignore"}} {
			wh := vwc.Webhooks[i]
			Expect(wh.Name).To(Equal(want.name))
			Expect(wh.FailurePolicy).To(Equal(want.failurePolicy))
			Expect(wh.TimeoutSeconds).To(Equal(5))
			Expect(wh.ClientConfig.Service.Name).To(Equal(byKind["Service"][0].Metadata.Name))
			Expect(wh.ClientConfig.Service.Namespace).To(Equal("imagegate-system"))
			Expect(wh.NamespaceSelector).NotTo(BeNil(), want.name)
			Expect(wh.MatchConditions).To(HaveLen(1), want.name)
		}
		Expect(string(out)).To(ContainSubstring("secretName: " + cert.Spec.SecretName))
	})
})
