//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// A kube-apiserver of its own, started with the in-tree ImagePolicyWebhook plugin configured
// from config/imagepolicywebhook and pointed at imagegate's /imagereview, with no admission
// webhook registered: every decision below is the plugin's, enforcing the same policies.
var _ = Describe("imagegate behind the ImagePolicyWebhook plugin", func() {
	for _, defaultAllow := range []bool{false, true} {
		Context(fmt.Sprintf("with defaultAllow: %v", defaultAllow), Ordered, func() {
			var (
				c   *localcluster.Cluster
				mgr *localcluster.Manager
				dir string
			)
			k := func(args ...string) result {
				cmd := c.Kubectl(args...)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				GinkgoWriter.Printf("$ kubectl %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
				return result{stdout.String(), stderr.String(), err}
			}
			ok := func(args ...string) string {
				GinkgoHelper()
				r := k(args...)
				Expect(r.err).NotTo(HaveOccurred(), r.stderr)
				return r.stdout
			}
			refused := func(args ...string) string {
				GinkgoHelper()
				r := k(args...)
				Expect(r.err).To(HaveOccurred(), "should have been refused: %s", r.stdout)
				return r.stderr
			}
			const denied = `is forbidden: image policy webhook backend denied one or more images: `

			BeforeAll(func(ctx SpecContext) {
				dir = GinkgoT().TempDir()
				ca, err := localcluster.NewCA("imagegate-ipw-ca")
				Expect(err).NotTo(HaveOccurred())
				port, err := localcluster.FreePort()
				Expect(err).NotTo(HaveOccurred())
				Expect(os.WriteFile(filepath.Join(dir, "imagegate-ca.crt"), ca.CertPEM, 0o600)).To(Succeed())
				render := func(name string, replace ...string) string {
					data, err := os.ReadFile(filepath.Join(root, "config", "imagepolicywebhook", name))
					Expect(err).NotTo(HaveOccurred())
					out := string(data)
					for i := 0; i < len(replace); i += 2 {
						Expect(out).To(ContainSubstring(replace[i]), "config/imagepolicywebhook/%s changed: update this test", name)
						out = strings.ReplaceAll(out, replace[i], replace[i+1])
					}
					path := filepath.Join(dir, name)
					Expect(os.WriteFile(path, []byte(out), 0o600)).To(Succeed())
					return path
				}
				render("imagegate.kubeconfig",
					"/etc/kubernetes/imagegate/", dir+"/",
					"IMAGEGATE_ADDRESS", "127.0.0.1:"+strconv.Itoa(port))
				admission := render("admission-config.yaml",
					"/etc/kubernetes/imagegate/", dir+"/",
					"defaultAllow: false", "defaultAllow: "+strconv.FormatBool(defaultAllow))
				auditPolicy := filepath.Join(dir, "audit-policy.yaml")
				Expect(os.WriteFile(auditPolicy, []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  resources: [{group: "", resources: [pods, pods/ephemeralcontainers]}]
  omitStages: [RequestReceived]
- level: None
`), 0o600)).To(Succeed())

				c, err = localcluster.Start(ctx, localcluster.Options{
					BinDir: os.Getenv("E2E_BIN_DIR"),
					CA:     ca,
					ExtraAPIServerArgs: []string{
						"--enable-admission-plugins=ImagePolicyWebhook",
						"--admission-control-config-file=" + admission,
						"--audit-policy-file=" + auditPolicy,
						"--audit-log-path=" + filepath.Join(dir, "audit.log"),
					},
					Progress: func(f string, a ...any) { GinkgoWriter.Printf(f+"\n", a...) },
				})
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(func() { Expect(c.Stop()).To(Succeed()) })

				ok("apply", "-f", filepath.Join(root, "config", "crd", "bases"))
				ok("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
				mgr, err = c.StartManager(ctx, localcluster.ManagerOptions{
					Binary: filepath.Join(root, "bin", "manager"), WebhookPort: port,
				})
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(func() {
					if CurrentSpecReport().Failed() {
						GinkgoWriter.Println("manager log:\n" + mgr.Log())
					}
				})
				r := runOn(c, []byte(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: trusted
spec:
  allowBreakGlass: true
  images:
    allow: ["ghcr.io/acme/**"]
`), "apply", "-f", "-")
				Expect(r.err).NotTo(HaveOccurred(), r.stderr)
				ok("wait", "--for=condition=Ready", "clusterimagepolicy/trusted", "--timeout=60s")
				ok("create", "namespace", "ipw")
				Eventually(func() error { return c.KubectlQuiet("get", "serviceaccount", "default", "-n", "ipw") }).
					WithTimeout(time.Minute).Should(Succeed())
			}, NodeTimeout(3*time.Minute))

			It("admits allowed containers and init containers, and records the decision in the audit log", func() {
				manifest := `apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  initContainers: [{name: init, image: "ghcr.io/acme/init:1"}]
  containers: [{name: app, image: "ghcr.io/acme/app:1"}]
`
				r := runOn(c, []byte(manifest), "apply", "-n", "ipw", "-f", "-")
				Expect(r.err).NotTo(HaveOccurred(), r.stderr)
				Eventually(func() string {
					b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
					return string(b)
				}).WithTimeout(30 * time.Second).Should(ContainSubstring(`"imagepolicywebhook.image-policy.k8s.io/decision":"allowed"`))
			})

			It("refuses a disallowed init container with the apiserver's message and imagegate's reason", func() {
				manifest := `apiVersion: v1
kind: Pod
metadata: {name: bad-init}
spec:
  initContainers: [{name: init, image: "busybox:1.36"}]
  containers: [{name: app, image: "ghcr.io/acme/app:1"}]
`
				r := runOn(c, []byte(manifest), "apply", "-n", "ipw", "-f", "-")
				Expect(r.err).To(HaveOccurred())
				Expect(r.stderr).To(ContainSubstring(`pods "bad-init" ` + denied +
					`ImageReview spec.containers[1].image: image "busybox:1.36" (docker.io/library/busybox:1.36) is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`))
				Expect(k("get", "pod", "bad-init", "-n", "ipw").err).To(HaveOccurred())
			})

			It("refuses a disallowed ephemeral container (kubectl debug) and admits an allowed one", func() {
				ok("run", "target", "-n", "ipw", "--image=ghcr.io/acme/target:1")
				stderr := refused("debug", "pod/target", "-n", "ipw", "--image=docker.io/library/alpine:3.20", "--container=dbg", "--attach=false")
				Expect(stderr).To(ContainSubstring(denied + `ImageReview spec.containers[0].image: image "docker.io/library/alpine:3.20"`))
				ok("debug", "pod/target", "-n", "ipw", "--image=ghcr.io/acme/debug:1", "--container=dbg", "--attach=false")
				Expect(ok("get", "pod", "target", "-n", "ipw", "-o=jsonpath={.spec.ephemeralContainers[0].image}")).To(Equal("ghcr.io/acme/debug:1"))
			})

			It("admits a break-glass Pod through a policy that allows it, and audits it", func() {
				ok("run", "glass", "-n", "ipw", "--image=quay.io/vendor/hotfix:1", "--annotations=alpha.image-policy.k8s.io/break-glass=true")
				Eventually(func() string {
					b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
					return string(b)
				}).WithTimeout(30 * time.Second).Should(ContainSubstring(`"imagepolicywebhook.image-policy.k8s.io/break-glass":"ClusterImagePolicy/trusted"`))
				stderr := refused("run", "noglass", "-n", "ipw", "--image=quay.io/vendor/hotfix:2")
				Expect(stderr).To(ContainSubstring(denied))
			})

			It("does not decide kube-system, as the webhook leaves it out", func() {
				Eventually(func() error { return c.KubectlQuiet("get", "serviceaccount", "default", "-n", "kube-system") }).
					WithTimeout(time.Minute).Should(Succeed())
				ok("run", "system", "-n", "kube-system", "--image=registry.k8s.io/pause:3.10")
			})

			It("keeps deciding after its serving certificate is renewed, as the plugin trusts the CA", func() {
				before := servedSerial(c.CA, mgr)
				kp, err := c.CA.Serving("imagegate-webhook", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
				Expect(err).NotTo(HaveOccurred())
				Expect(mgr.WriteServingCert(kp)).To(Succeed())
				Eventually(func() string { return servedSerial(c.CA, mgr) }).WithTimeout(10 * time.Second).Should(Equal(kp.Serial()))
				Expect(kp.Serial()).NotTo(Equal(before))
				// Images the plugin has not cached: both answers come from imagegate over the
				// renewed certificate (a TLS failure would refuse both, or admit both).
				Expect(refused("run", "renewed-bad", "-n", "ipw", "--image=quay.io/evil/renewed:1")).To(ContainSubstring(denied))
				ok("run", "renewed-good", "-n", "ipw", "--image=ghcr.io/acme/renewed:1")
			})

			It("follows defaultAllow when imagegate is down", func(ctx SpecContext) {
				Expect(mgr.Stop()).To(Succeed())
				DeferCleanup(func(ctx SpecContext) { Expect(mgr.Start(ctx)).To(Succeed()) })
				// An image never reviewed before, so that no cached answer is used.
				r := k("run", "down", "-n", "ipw", "--image=ghcr.io/acme/while-down:1")
				if defaultAllow {
					Expect(r.err).NotTo(HaveOccurred(), r.stderr)
					// The plugin also sets the Pod annotation alpha.image-policy.k8s.io/failed-open,
					// but from the validating phase, and Kubernetes 1.37 does not keep it: the
					// audit annotation is the record.
					Eventually(func() string {
						b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
						return string(b)
					}).WithTimeout(30 * time.Second).Should(ContainSubstring(`"imagepolicywebhook.image-policy.k8s.io/failed-open":"true"`))
				} else {
					Expect(r.err).To(HaveOccurred())
					Expect(r.stderr).To(ContainSubstring(`pods "down" is forbidden`))
					Expect(r.stderr).To(ContainSubstring("/imagereview"))
					Expect(k("get", "pod", "down", "-n", "ipw").err).To(HaveOccurred())
				}
			})
		})
	}
})

// runOn runs kubectl against a given cluster with stdin.
func runOn(c *localcluster.Cluster, stdin []byte, args ...string) result {
	cmd := c.Kubectl(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = bytes.NewReader(stdin)
	err := cmd.Run()
	GinkgoWriter.Printf("$ kubectl %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	return result{stdout.String(), stderr.String(), err}
}
