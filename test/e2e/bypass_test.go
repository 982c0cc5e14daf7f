//go:build e2e

package e2e

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The bypasses of issue 15 with the real kubectl, manager and apiserver. The policies select
// this spec's namespace only, and the assertions name them, so other specs' policies may exist
// or not.
var _ = Describe("Bypasses through kubectl", func() {
	It("refuses kubectl run of an image ID, whatever the allow-list says", func() {
		namespace("e2e-image-id")
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata: {name: e2e-image-id}
spec:
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-image-id}}
  images: {allow: ["docker.io/library/*", "ghcr.io/acme/**"]}
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-image-id") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-image-id", "--timeout=60s")
		Eventually(func() string {
			return run("run", "probe", "-n", "e2e-image-id", "--image=quay.io/x/y:1", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))

		for _, id := range []string{"sha256:4f1d", "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"} {
			stderr := kubectlRefused("run", "by-id", "-n", "e2e-image-id", "--image="+id)
			Expect(stderr).To(ContainSubstring(denyMessage))
			Expect(stderr).To(ContainSubstring(`spec.containers[0].image: image "` + id + `" is not allowed by ClusterImagePolicy "e2e-image-id": it could be taken by the container runtime as the ID of an image already on the node`))
		}
		Expect(run("get", "pod", "by-id", "-n", "e2e-image-id").err).To(HaveOccurred(), "the refused Pod must not exist")
	})

	It("refuses kubectl label that moves a Pod into a podSelector its image breaks", func() {
		namespace("e2e-relabel")
		kubectl("run", "backdoor", "-n", "e2e-relabel", "--image=ghcr.io/acme/backdoor:1", "--labels=app=tmp")
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata: {name: e2e-payments}
spec:
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-relabel}}
  podSelector: {matchLabels: {app: payments}}
  images: {allow: ["ghcr.io/acme/payments/**"]}
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-payments") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-payments", "--timeout=60s")
		Eventually(func() string {
			return run("run", "probe", "-n", "e2e-relabel", "--image=ghcr.io/acme/other:1", "--labels=app=payments", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))

		stderr := kubectlRefused("label", "pod", "backdoor", "-n", "e2e-relabel", "app=payments", "--overwrite")
		Expect(stderr).To(ContainSubstring(denyMessage))
		Expect(stderr).To(ContainSubstring(`spec.containers[0].image: image "ghcr.io/acme/backdoor:1" is not allowed by ClusterImagePolicy "e2e-payments": it matches no pattern in images.allow`))
		Expect(kubectl("get", "pod", "backdoor", "-n", "e2e-relabel", "-o=jsonpath={.metadata.labels.app}")).To(Equal("tmp"))

		By("a label that keeps the Pod out of the selector still goes through")
		kubectl("label", "pod", "backdoor", "-n", "e2e-relabel", "team=a")
		Expect(kubectl("get", "pod", "backdoor", "-n", "e2e-relabel", "-o=jsonpath={.metadata.labels.team}")).To(Equal("a"))
	})
})
