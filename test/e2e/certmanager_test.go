//go:build e2e

package e2e

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// config/default registers the webhook by Service, with cert-manager injecting the CA. This
// runs cert-manager's own CA injector against the apiserver and checks that the shipped
// annotation and names line up: the caBundle arrives, and the apiserver then calls the
// manager through the Service and trusts its certificate.
var _ = Describe("cert-manager CA injection into config/default's webhook", Ordered, func() {
	const (
		ns         = "imagegate-system"
		service    = "imagegate-webhook-service"
		certName   = "imagegate-serving-cert"
		secretName = "webhook-server-cert"
		vwcName    = "imagegate-validating-webhook-configuration"
		mwcName    = "imagegate-mutating-webhook-configuration"
	)

	BeforeAll(func() {
		cainjector, crds := os.Getenv("E2E_CAINJECTOR"), os.Getenv("E2E_CERT_MANAGER_DIR")
		Expect(cainjector).NotTo(BeEmpty(), "E2E_CAINJECTOR must name the cainjector binary: run `make test-e2e`")
		Expect(crds).NotTo(BeEmpty(), "E2E_CERT_MANAGER_DIR must name the cert-manager module folder: run `make test-e2e`")
		kubectl("apply", "-f", filepath.Join(crds, "deploy", "crds"))
		kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io", "--timeout=60s")
		_, err := cluster.Run("cainjector", cainjector, nil)
		Expect(err).NotTo(HaveOccurred())

		// Only config/default's webhook may answer in these specs.
		kubectl("delete", "validatingwebhookconfiguration", "imagegate-local-validating-webhook-configuration")
		kubectl("delete", "mutatingwebhookconfiguration", "imagegate-local-mutating-webhook-configuration")
		DeferCleanup(func() {
			run("delete", "validatingwebhookconfiguration", vwcName, "--ignore-not-found")
			run("delete", "mutatingwebhookconfiguration", mwcName, "--ignore-not-found")
			Expect(manager.RegisterWebhook(root)).To(Succeed())
		})

		for _, kind := range []string{"Namespace", "Service", "Issuer", "Certificate", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"} {
			docs := renderedOf(kind)
			Expect(docs).NotTo(BeEmpty(), "config/default renders no %s", kind)
			for _, doc := range docs {
				r := apply(doc)
				Expect(r.err).NotTo(HaveOccurred(), r.stderr)
			}
		}
		Expect(kubectl("get", "validatingwebhookconfiguration", vwcName,
			"-o=jsonpath={.metadata.annotations.cert-manager\\.io/inject-ca-from}")).To(Equal(ns + "/" + certName))
		Expect(kubectl("get", "mutatingwebhookconfiguration", mwcName,
			"-o=jsonpath={.metadata.annotations.cert-manager\\.io/inject-ca-from}")).To(Equal(ns + "/" + certName))
		Expect(kubectl("get", "certificate", certName, "-n", ns, "-o=jsonpath={.spec.secretName}")).To(Equal(secretName))

		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-cm
spec:
  images:
    allow: ["ghcr.io/acme/**"]
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-cm") })
		DeferCleanup(func() { run("delete", "endpointslice", service+"-e2e", "-n", ns, "--ignore-not-found") })
		namespace("e2e-cm")
	})

	It("has no caBundle before cert-manager has written the Secret, so the apiserver cannot call the webhook", func() {
		if hostIP == nil {
			Skip("this machine has no non-loopback IPv4 address for the EndpointSlice")
		}
		// The Service's endpoint, as the EndpointSlice controller would list a manager Pod.
		applyEndpointSlice(service, ns, manager.WebhookPort)

		Expect(kubectl("get", "validatingwebhookconfiguration", vwcName, "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")).To(BeEmpty())
		stderr := kubectlRefused("run", "early", "-n", "e2e-cm", "--image=ghcr.io/acme/web:1")
		// The mutating webhook is called first; either is refused the same way.
		Expect(stderr).To(MatchRegexp(`failed calling webhook "(pin\.)?pods\.imagegate\.io"`))
		Expect(stderr).To(ContainSubstring("x509"))
	})

	It("gets the CA injected from the Secret cert-manager writes, and the apiserver then trusts the manager", func() {
		// What cert-manager's issuer writes for the Certificate: the key pair, the CA, and
		// the annotation the CA injector checks before it trusts the Secret.
		kubectl("create", "secret", "generic", secretName, "-n", ns, "--type=kubernetes.io/tls",
			"--from-file=tls.crt="+filepath.Join(manager.CertDir, "tls.crt"),
			"--from-file=tls.key="+filepath.Join(manager.CertDir, "tls.key"),
			"--from-file=ca.crt="+filepath.Join(cluster.Dir, "ca.crt"))
		kubectl("annotate", "secret", secretName, "-n", ns, "cert-manager.io/certificate-name="+certName)

		Eventually(func() string {
			b64 := kubectl("get", "validatingwebhookconfiguration", vwcName, "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")
			b, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return ""
			}
			return string(b)
		}).WithTimeout(time.Minute).Should(Equal(string(cluster.CA.CertPEM)),
			func() string { return "cainjector log:\n" + cainjectorLog() })
		Eventually(func() string {
			b64 := kubectl("get", "mutatingwebhookconfiguration", mwcName, "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")
			b, _ := base64.StdEncoding.DecodeString(b64)
			return string(b)
		}).WithTimeout(time.Minute).Should(Equal(string(cluster.CA.CertPEM)),
			func() string { return "cainjector log:\n" + cainjectorLog() })

		if hostIP == nil {
			Skip("this machine has no non-loopback IPv4 address for the EndpointSlice")
		}
		Eventually(func() error {
			return run("run", "web", "-n", "e2e-cm", "--image=ghcr.io/acme/web:1").err
		}).WithTimeout(30 * time.Second).Should(Succeed())
		stderr := kubectlRefused("run", "bad", "-n", "e2e-cm", "--image=docker.io/evil/miner:1")
		Expect(stderr).To(ContainSubstring(`admission webhook "pods.imagegate.io" denied the request`))
		Expect(stderr).To(ContainSubstring(`ClusterImagePolicy "e2e-cm"`))
	})
})

func cainjectorLog() string {
	b, _ := os.ReadFile(filepath.Join(cluster.Dir, "cainjector.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}
