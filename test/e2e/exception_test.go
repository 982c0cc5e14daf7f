//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Exceptions through kubectl, the real apiserver's RBAC and the real manager: who may grant
// one, a vendor image refused, excepted (admitted with a warning), the exception expiring,
// and the image refused again, with the audit and the exception's status saying so.
var _ = Describe("ImagePolicyExceptions", Ordered, func() {
	const ns = "e2e-exceptions"
	exceptionYAML := func(expires time.Time, reason string) string {
		return fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicyException
metadata:
  name: vendor-latest
  namespace: %s
spec:
  reason: %q
  expiresAt: %q
  images: ["docker.io/vendor/**"]
  policies:
  - kind: ClusterImagePolicy
    name: e2e-no-latest
    rules: [tags.deny]
`, ns, reason, expires.UTC().Format(time.RFC3339))
	}

	BeforeAll(func() {
		namespace(ns)
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-no-latest
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  tags:
    deny: [latest]
`, ns))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-no-latest") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-no-latest", "--timeout=30s")
		// The shipped roles, as config/rbac has them (without the kustomize name prefix).
		for _, f := range []string{"imagepolicyexception_viewer_role.yaml", "imagepolicyexception_granter_role.yaml"} {
			kubectl("apply", "-f", filepath.Join(root, "config", "rbac", f))
		}
		DeferCleanup(func() {
			run("delete", "clusterrole", "imagepolicyexception-viewer-role", "imagepolicyexception-granter-role")
		})
		kubectl("create", "rolebinding", "alice-edit", "-n", ns, "--clusterrole=edit", "--user=alice")
		kubectl("create", "rolebinding", "bob-grants", "-n", ns, "--clusterrole=imagepolicyexception-granter-role", "--user=bob")
	})

	It("lets namespace editors read exceptions but only the granted role write them", func() {
		// kube-controller-manager aggregates the viewer role into edit.
		Eventually(func() string {
			return strings.TrimSpace(run("auth", "can-i", "list", "imagepolicyexceptions.imagegate.io", "-n", ns, "--as=alice").stdout)
		}).WithTimeout(30 * time.Second).Should(Equal("yes"))
		r := runIn([]byte(exceptionYAML(time.Now().Add(time.Hour), "alice tries")), "create", "-f", "-", "--as=alice")
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring(`User "alice" cannot create resource "imagepolicyexceptions"`))
		Expect(strings.TrimSpace(run("auth", "can-i", "create", "pods", "-n", ns, "--as=alice").stdout)).To(Equal("yes"), "alice can create Pods, yet not exempt them")

		// Bob may, but not an exception that has already expired: refused at apply, by field.
		r = runIn([]byte(exceptionYAML(time.Now().Add(-time.Minute), "too late")), "create", "-f", "-", "--as=bob")
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring(`admission webhook "exceptions.imagegate.io" denied the request: ImagePolicyException "vendor-latest" is invalid: spec.expiresAt:`))
		Expect(r.stderr).To(ContainSubstring("is not in the future"))
		// Or one that names no policy: the schema refuses it.
		r = runIn([]byte(strings.Replace(exceptionYAML(time.Now().Add(time.Hour), "none"), `  policies:
  - kind: ClusterImagePolicy
    name: e2e-no-latest
    rules: [tags.deny]
`, "  policies: []\n", 1)), "create", "-f", "-", "--as=bob")
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring("spec.policies"))
	})

	It("admits the vendor image with a warning while the exception lasts, and refuses it again once it expires", func() {
		stderr := kubectlRefused("run", "appliance", "-n", ns, "--image=docker.io/vendor/appliance:latest")
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-no-latest": its tag "latest" is in tags.deny`))

		expires := time.Now().Add(25 * time.Second).Truncate(time.Second)
		r := runIn([]byte(exceptionYAML(expires, "vendor ships only :latest (TICKET-123)")), "create", "-f", "-", "--as=bob")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "imagepolicyexception", "vendor-latest", "-n", ns) })
		Eventually(func() string {
			return kubectl("get", "imagepolicyexception", "vendor-latest", "-n", ns, "-o=jsonpath={.status.conditions[?(@.type==\"Active\")].status}")
		}).WithTimeout(20 * time.Second).Should(Equal("True"))

		r = run("run", "appliance", "-n", ns, "--image=docker.io/vendor/appliance:latest")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring(`ImagePolicyException "` + ns + `/vendor-latest" exempts "docker.io/vendor/appliance:latest" from ClusterImagePolicy "e2e-no-latest" (tags.deny) until ` + expires.UTC().Format(time.RFC3339)))
		// It runs (the kubelet would write this).
		kubectl("patch", "pod", "appliance", "-n", ns, "--subresource=status", "--type=merge",
			`-p={"status":{"phase":"Running"}}`)
		// A spec edit of the exception rebuilds the policies, which runs the audit: it counts the
		// running Pod that relies on the exception.
		r = runIn([]byte(exceptionYAML(expires, "vendor ships only :latest (TICKET-123, confirmed)")), "apply", "-f", "-", "--as=bob")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Eventually(func() string {
			return kubectl("get", "imagepolicyexception", "vendor-latest", "-n", ns, "-o=jsonpath={.status.pods}")
		}).WithTimeout(20 * time.Second).Should(Equal("1"))
		out := kubectl("get", "imagepolicyexceptions", "-n", ns)
		Expect(out).To(MatchRegexp(`vendor-latest\s+e2e-no-latest\s+` + expires.UTC().Format(time.RFC3339) + `\s+True\s+1`))

		// At its expiry the manager rebuilds (no event needed): the exception says Expired, the
		// image is refused again, and the audit reports the running Pod.
		time.Sleep(time.Until(expires))
		Eventually(func() string {
			return kubectl("get", "imagepolicyexception", "vendor-latest", "-n", ns, "-o=jsonpath={.status.conditions[?(@.type==\"Active\")].reason}")
		}).WithTimeout(20 * time.Second).Should(Equal("Expired"))
		stderr = kubectlRefused("run", "appliance-2", "-n", ns, "--image=docker.io/vendor/appliance:latest")
		Expect(stderr).To(ContainSubstring(`its tag "latest" is in tags.deny`))
		Eventually(func() string {
			return kubectl("get", "clusterimagepolicy", "e2e-no-latest", "-o=jsonpath={.status.audit.violations} {.status.audit.samples[*].pod}")
		}).WithTimeout(20 * time.Second).Should(Equal("1 appliance"))
		Eventually(func() string {
			return kubectl("get", "events", "-n", ns, "--field-selector=reason=ExceptionExpired", "-o=jsonpath={.items[*].message}")
		}).WithTimeout(20 * time.Second).Should(ContainSubstring("expired at " + expires.UTC().Format(time.RFC3339)))
	})

	It("lets break-glass work only where an exception grants it, never through one that ignores a finding", func() {
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-glass
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  allowBreakGlass: true
  breakGlassRequiresException: true
  images:
    allow: ["quay.io/acme/**"]
`, ns))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-glass") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-glass", "--timeout=30s")
		glass := func(name, image string) result {
			return run("run", name, "-n", ns, "--image="+image, "--annotations=alpha.image-policy.k8s.io/break-glass=true", "--as=alice")
		}
		exception := func(name, body string) {
			r := runIn([]byte(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicyException
metadata:
  name: %s
  namespace: %s
spec:
  reason: e2e
  expiresAt: %q
%s`, name, ns, time.Now().Add(time.Hour).UTC().Format(time.RFC3339), body)), "create", "-f", "-", "--as=bob")
			Expect(r.err).NotTo(HaveOccurred(), r.stderr)
			DeferCleanup(func() { run("delete", "imagepolicyexception", name, "-n", ns) })
			Eventually(func() string {
				return kubectl("get", "imagepolicyexception", name, "-n", ns, "-o=jsonpath={.status.conditions[?(@.type==\"Active\")].status}")
			}).WithTimeout(20 * time.Second).Should(Equal("True"))
		}
		// An exception that only waives a finding names the policy: it unlocks nothing.
		exception("cve-waiver", `  ignore: [CVE-2026-1111]
  policies:
  - kind: ClusterImagePolicy
    name: e2e-glass
    rules: [verify]
`)
		r = glass("miner", "docker.io/cryptominer/xmrig:6.21")
		Expect(r.err).To(HaveOccurred(), "break-glass unlocked by an ignore-only exception")
		Expect(r.stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-glass": it matches no pattern in images.allow`))

		// A grant for the vendor's images: break-glass works for them, and only for them.
		exception("incident-42", `  allowBreakGlass: true
  images: ["docker.io/vendor/**"]
  policies:
  - kind: ClusterImagePolicy
    name: e2e-glass
`)
		r = glass("hotfix", "docker.io/vendor/hotfix:1")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring("admitted by break-glass"))
		Expect(run("run", "hotfix-2", "-n", ns, "--image=docker.io/vendor/hotfix:1", "--as=alice").err).To(HaveOccurred(), "the grant exempts nothing without the annotation")
		r = glass("miner-2", "docker.io/cryptominer/xmrig:6.21")
		Expect(r.err).To(HaveOccurred(), "break-glass applied to an image the grant does not cover")
	})
})
