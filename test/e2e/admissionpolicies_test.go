//go:build e2e

package e2e

import (
	"net"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// docs/admission-policies.md through the real manager started with --admission-policies: the
// name rules become ValidatingAdmissionPolicies that the kube-apiserver enforces with every
// imagegate process stopped, edits reach them, and the webhook is called only for what needs
// it (here an image spelled in a way CEL leaves to it, refused while the webhook is down).
var _ = Describe("Name rules in the kube-apiserver (--admission-policies)", Ordered, func() {
	const ns = "e2e-vap"
	var vapManager *localcluster.Manager
	trusted := func(allow string) string {
		return `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: vap-trusted
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: ` + ns + `
  images:
    allow: [` + allow + `]
`
	}
	const noLatest = `apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: no-latest
  namespace: ` + ns + `
spec:
  mode: Warn
  tags:
    deny: [latest]
`

	BeforeAll(func(ctx SpecContext) {
		namespace(ns)
		Expect(apply(trusted(`"ghcr.io/acme/**"`)).err).NotTo(HaveOccurred())
		Expect(apply(noLatest).err).NotTo(HaveOccurred())
		// The suite's manager makes way for one in this mode, which serves the webhook too.
		Expect(manager.Stop()).To(Succeed())
		var ips []net.IP
		if hostIP != nil {
			ips = append(ips, hostIP)
		}
		var err error
		vapManager, err = cluster.StartManager(ctx, localcluster.ManagerOptions{
			Binary: filepath.Join(root, "bin", "manager"), DNSNames: certificateDNSNames(), IPs: ips,
			Args: []string{"--admission-policies", "--validating-webhook-configuration=" + localValidating,
				"--pin-scope-configuration=imagegate-local-mutating-webhook-configuration", "--audit-interval=0"},
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(vapManager.RegisterWebhook(root)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			if CurrentSpecReport().Failed() {
				GinkgoWriter.Println("admission-policies manager log:\n" + vapManager.Log())
			}
			_ = vapManager.Stop()
			run("delete", "clusterimagepolicy", "vap-trusted", "--ignore-not-found")
			// Back to the suite's manager, which removes what this mode wrote.
			Expect(manager.Start(ctx)).To(Succeed())
			Expect(manager.RegisterWebhook(root)).To(Succeed())
			Eventually(func() string {
				return run("get", "validatingadmissionpolicies", "-l", "app.kubernetes.io/managed-by=imagegate", "-o=name").stdout +
					run("get", "validatingwebhookconfiguration", localValidating, "-o=jsonpath={.webhooks[0].matchConditions[*].name}").stdout
			}).WithTimeout(time.Minute).Should(Equal("image-or-label-changed"))
		})
	}, NodeTimeout(3*time.Minute))

	It("compiles the name rules into ValidatingAdmissionPolicies and says so in each policy's status", func() {
		Eventually(func() string {
			return run("get", "clusterimagepolicy", "vap-trusted", `-o=jsonpath={.status.conditions[?(@.type=="InAPIServer")].status}`).stdout
		}).WithTimeout(time.Minute).Should(Equal("True"))
		Expect(kubectl("get", "imagepolicy", "no-latest", "-n", ns, `-o=jsonpath={.status.conditions[?(@.type=="InAPIServer")].reason}`)).To(Equal("AdmissionPolicy"))
		Eventually(func() string {
			return run("get", "validatingadmissionpolicies", "-l", "app.kubernetes.io/managed-by=imagegate",
				`-o=jsonpath={range .items[*]}{.metadata.name}={.metadata.annotations.imagegate\.io/policy} {end}`).stdout
		}).WithTimeout(30 * time.Second).Should(And(MatchRegexp(`imagegate-deny-0=[^ ]*ClusterImagePolicy/vap-trusted`), MatchRegexp(`imagegate-warn-0=[^ ]*ImagePolicy/`+ns+`/no-latest`)))
		Eventually(func() string {
			return run("get", "validatingadmissionpolicybinding", "imagegate-warn-0", "-o=jsonpath={.spec.validationActions}").stdout
		}).WithTimeout(30 * time.Second).Should(Equal(`["Warn"]`))
		// Nothing here verifies: the webhook's condition sends only the images CEL leaves to it.
		Expect(kubectl("get", "validatingwebhookconfiguration", localValidating,
			`-o=jsonpath={.webhooks[0].matchConditions[?(@.name=="admission-policies-scope")].expression}`)).NotTo(ContainSubstring("request.namespace in"))
	})

	It("keeps refusing and admitting by name with every imagegate process stopped", func() {
		Expect(vapManager.Stop()).To(Succeed())

		Expect(kubectlRefused("run", "evil", "-n", ns, "--image=docker.io/evil/app:1")).To(ContainSubstring(
			`denied request: spec.containers[0].image: image "docker.io/evil/app:1" is not allowed by ClusterImagePolicy "vap-trusted": it matches no pattern in images.allow`))
		Expect(kubectlRefused("run", "evil", "-n", ns, "--image=evil")).To(MatchRegexp(
			`ValidatingAdmissionPolicy 'imagegate-deny-0' with binding 'imagegate-deny-0' denied request: spec.containers\[0\].image: image "evil" \(docker.io/library/evil\) is not allowed by ClusterImagePolicy "vap-trusted": it matches no pattern in images.allow`))
		// Docker Hub's other names and the default port are the same registry in CEL too.
		Expect(kubectlRefused("run", "evil", "-n", ns, "--image=ghcr.io:443/evil/app:1")).To(ContainSubstring(`(ghcr.io/evil/app:1) is not allowed`))
		Expect(kubectlRefused("run", "evil", "-n", ns, "--image=sha256:0123")).To(ContainSubstring(`could be taken by the container runtime as the ID of an image`))

		r := run("run", "web", "-n", ns, "--image=ghcr.io/acme/web:1.0")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		r = run("run", "latest", "-n", ns, "--image=ghcr.io/acme/web:latest")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring(`spec.containers[0].image: image "ghcr.io/acme/web:latest" is not allowed by ImagePolicy "no-latest": its tag "latest" is in tags.deny`))

		// An uppercase registry host is one CEL leaves to the webhook, which is down: refused.
		Expect(kubectlRefused("run", "upper", "-n", ns, "--image=GHCR.io/acme/web:1.0")).To(ContainSubstring(`failed calling webhook "pods.imagegate.io"`))
	})

	It("brings a policy edit and a deletion to the apiserver within seconds", func(ctx SpecContext) {
		Expect(vapManager.Start(ctx)).To(Succeed())
		Expect(apply(trusted(`"ghcr.io/acme/**", "docker.io/evil/*"`)).err).NotTo(HaveOccurred())
		Eventually(func() error {
			r := run("run", "now-allowed", "-n", ns, "--image=docker.io/evil/app:1", "--dry-run=server")
			return r.err
		}).WithTimeout(30 * time.Second).Should(Succeed())
		// With the webhook back, the uppercase host is decided by it: the same registry.
		r := run("run", "upper", "-n", ns, "--image=GHCR.io/acme/web:1.0")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)

		kubectl("delete", "clusterimagepolicy", "vap-trusted")
		Eventually(func() string {
			return run("get", "validatingadmissionpolicies", "-l", "app.kubernetes.io/managed-by=imagegate",
				`-o=jsonpath={range .items[*]}{.metadata.annotations.imagegate\.io/policy} {end}`).stdout
		}).WithTimeout(30 * time.Second).ShouldNot(ContainSubstring("vap-trusted"))
		// The apiserver's own informer drops it a moment later.
		Eventually(func() error {
			return run("run", "other", "-n", ns, "--image=quay.io/other/app:1", "--dry-run=server").err
		}).WithTimeout(30 * time.Second).Should(Succeed())
	})
})
