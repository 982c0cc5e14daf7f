//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/imagegate/imagegate/test/utils/localcluster"
	"github.com/imagegate/imagegate/test/utils/registrytest"
	"github.com/imagegate/imagegate/test/utils/runtimeref"
)

// The node: a kubelet with containerd and runc. Its CRI image service (what the kubelet
// calls) pulls the image strings imagegate stored and is asked what it would do with the
// strings imagegate refuses; Pods that tolerate its taint run on it. Every registry host
// containerd is asked for reaches one registry on loopback, which sees the host the image
// named (containerd's mirror protocol, ?ns=).
var _ = Describe("A container runtime pulls what imagegate admitted", Ordered, func() {
	const (
		ns    = "e2e-node"
		taint = "imagegate.io/e2e-node"
	)
	var (
		reg  *registrytest.Registry
		node *localcluster.Node
		key  *registrytest.Key
		// seen is the manifest requests containerd made: the host the image named and the path
		// asked for.
		mu   sync.Mutex
		seen []string
	)
	ctx := context.Background()

	// manifestRequests returns the manifest requests since the last call.
	manifestRequests := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}
	// repoDigests is what containerd has under image: its ID and repo digests.
	repoDigests := func(image string) (string, []string) {
		GinkgoHelper()
		st, err := node.Images.Status(ctx, image)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).NotTo(BeNil(), "containerd has no image %s", image)
		return st.GetId(), st.GetRepoDigests()
	}
	stored := func(pod string) string {
		GinkgoHelper()
		return kubectl("get", "pod", pod, "-n", ns, "-o=jsonpath={.spec.containers[0].image}")
	}
	// runOnNode creates a Pod that tolerates the node's taint (the other Pods of the suite
	// stay off it) and returns what the apiserver answered.
	runOnNode := func(pod, image string) result {
		return run("run", pod, "-n", ns, "--image="+image,
			`--overrides={"apiVersion":"v1","spec":{"tolerations":[{"key":"`+taint+`","operator":"Exists"}]}}`)
	}
	// running waits for a Pod to be Ready and returns the image ID the kubelet reports for its
	// container: what the runtime says it runs.
	running := func(pod string) string {
		GinkgoHelper()
		r := run("wait", "--for=condition=Ready", "pod/"+pod, "-n", ns, "--timeout=90s")
		Expect(r.err).NotTo(HaveOccurred(), "%s\n%s\n%s", r.stderr,
			run("get", "pod", pod, "-n", ns, "-o=jsonpath={.status}").stdout, node.Log())
		return kubectl("get", "pod", pod, "-n", ns, "-o=jsonpath={.status.containerStatuses[0].imageID}")
	}

	BeforeAll(func() {
		nodeDir := os.Getenv("E2E_NODE_DIR")
		Expect(nodeDir).NotTo(BeEmpty(), "E2E_NODE_DIR must name the folder hack/setup-node.sh prints: run `make test-e2e`")
		var err error
		reg, err = registrytest.Listen("127.0.0.1:0", true)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(reg.Close)
		// Every image pushed here runs: the pause program, also the Pods' sandbox.
		reg.Program = filepath.Join(nodeDir, "pause")
		sandbox, err := reg.Push("imagegate/pause", "1")
		Expect(err).NotTo(HaveOccurred())
		reg.Watch(func(r *http.Request) {
			if !strings.Contains(r.URL.Path, "/manifests/") || !strings.Contains(r.UserAgent(), "containerd") {
				return
			}
			host := r.URL.Query().Get("ns")
			if host == "" {
				host = r.Host
			}
			mu.Lock()
			seen = append(seen, host+" "+r.URL.Path)
			mu.Unlock()
		})
		node, err = cluster.StartNode(ctx, localcluster.NodeOptions{
			BinDir: nodeDir, Registry: reg.Host, SandboxImage: sandbox.String(),
			Name: "e2e-node", Taint: taint,
			Progress: func(f string, a ...any) { GinkgoWriter.Printf(f+"\n", a...) },
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			if CurrentSpecReport().Failed() {
				GinkgoWriter.Printf("the node's logs:\n%s\n", node.Log())
			}
			// The kubelet ends the Pods' containers and confirms their deletion; then the node
			// stops, and its Node object (NotReady from then on) is deleted.
			run("delete", "pods", "--all", "-n", ns, "--timeout=60s")
			Expect(node.Stop()).To(Succeed())
			run("delete", "node", "e2e-node", "--wait=false")
		})

		key, err = registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		namespace(ns)
		pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-node
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  images:
    allow: ["%s/**"]
  verify:
    images: ["%s/acme/**"]
    transparencyLog: Skip
    signers:
    - name: release
      key:
        publicKey: |
          %s
`, ns, reg.Host, reg.Host, pem))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-node") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-node", "--timeout=30s")
	})

	It("pulls the digest imagegate verified, whatever the tag names after admission", func() {
		signed, err := reg.Push("acme/app", "1.0")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(signed)).To(Succeed())
		Eventually(func() error {
			return run("run", "node-signed", "-n", ns, "--image="+reg.Host+"/acme/app:1.0").err
		}).WithTimeout(30 * time.Second).Should(Succeed())
		image := stored("node-signed")
		Expect(image).To(Equal(reg.Host + "/acme/app:1.0@" + signed.DigestStr()))

		// The kubelet passes the stored string to the runtime as it is.
		id, err := node.Images.Pull(ctx, image, nil)
		Expect(err).NotTo(HaveOccurred(), node.Log())
		gotID, digests := repoDigests(image)
		Expect(gotID).To(Equal(id))
		Expect(digests).To(ContainElement(reg.Host + "/acme/app@" + signed.DigestStr()))
		// containerd asked for the digest, never the tag.
		Expect(manifestRequests()).To(And(Not(BeEmpty()), HaveEach(reg.Host+" /v2/acme/app/manifests/"+signed.DigestStr())))

		// The tag moves to other content, signed too. A node that pulls the stored string again
		// (a new node, an evicted image) still gets the verified digest; the tag alone would
		// get the new content.
		moved, err := reg.Push("acme/app", "1.0")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(moved)).To(Succeed())
		Expect(node.Images.Remove(ctx, image)).To(Succeed())
		again, err := node.Images.Pull(ctx, image, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(again).To(Equal(id))
		_, digests = repoDigests(image)
		Expect(digests).To(ContainElement(reg.Host + "/acme/app@" + signed.DigestStr()))
		Expect(digests).NotTo(ContainElement(HaveSuffix(moved.DigestStr())))

		byTag, err := node.Images.Pull(ctx, reg.Host+"/acme/app:1.0", nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(byTag).NotTo(Equal(id), "the tag should name the new content now")
		_, digests = repoDigests(reg.Host + "/acme/app:1.0")
		Expect(digests).To(ContainElement(reg.Host + "/acme/app@" + moved.DigestStr()))
	})

	It("runs an admitted Pod at the digest imagegate verified", func() {
		signed, err := reg.Push("acme/run", "1.0")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(signed)).To(Succeed())
		r := runOnNode("node-run", reg.Host+"/acme/run:1.0")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(stored("node-run")).To(Equal(reg.Host + "/acme/run:1.0@" + signed.DigestStr()))
		// The tag moves to unsigned content: whenever the kubelet pulls, it pulls the digest.
		_, err = reg.Push("acme/run", "1.0")
		Expect(err).NotTo(HaveOccurred())
		Expect(running("node-run")).To(Equal(reg.Host + "/acme/run@" + signed.DigestStr()))

		// An unsigned image is refused before any node sees it.
		unsigned, err := reg.Push("acme/run", "nightly")
		Expect(err).NotTo(HaveOccurred())
		manifestRequests()
		r = runOnNode("node-run-unsigned", reg.Host+"/acme/run:nightly")
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-node": no signature by a trusted signer`))
		Expect(manifestRequests()).To(BeEmpty(), "the node pulled %s", unsigned)
	})

	It("runs what a tag@digest string's digest names, not its tag: imagegate verifies the digest", func() {
		signed, err := reg.Push("acme/pair", "release")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(signed)).To(Succeed())
		unsigned, err := reg.Push("acme/pair", "nightly")
		Expect(err).NotTo(HaveOccurred())
		lookalike := reg.Host + "/acme/pair:release@" + unsigned.DigestStr()

		stderr := kubectlRefused("run", "node-lookalike", "-n", ns, "--image="+lookalike)
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-node": no signature by a trusted signer`))

		// What the runtime would have run: the unsigned digest, with the signed tag ignored.
		manifestRequests()
		_, err = node.Images.Pull(ctx, lookalike, nil)
		Expect(err).NotTo(HaveOccurred())
		_, digests := repoDigests(lookalike)
		Expect(digests).To(ConsistOf(reg.Host + "/acme/pair@" + unsigned.DigestStr()))
		Expect(manifestRequests()).To(And(Not(BeEmpty()), HaveEach(reg.Host+" /v2/acme/pair/manifests/"+unsigned.DigestStr())))
	})

	It("would run a local image for an image ID or an ID prefix, whatever its name: imagegate refuses both", func() {
		// An unsigned image some other Pod (another namespace, another policy) had pulled.
		other, err := reg.Push("vendor/miner", "1")
		Expect(err).NotTo(HaveOccurred())
		id, err := node.Images.Pull(ctx, other.String(), nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(id).To(MatchRegexp(`^sha256:[0-9a-f]{64}$`))

		for _, s := range []string{id, id[:len("sha256:")+12]} {
			By("the image string " + s)
			// The kubelet asks ImageStatus before pulling: the runtime resolves the ID or the
			// prefix to the image on the node, and the kubelet never pulls.
			gotID, digests := repoDigests(s)
			Expect(gotID).To(Equal(id))
			Expect(digests).To(ConsistOf(other.String()))
			stderr := kubectlRefused("run", "node-id", "-n", ns, "--image="+s)
			Expect(stderr).To(ContainSubstring("could be taken by the container runtime as the ID of an image already on the node"))
		}
	})

	It("reads every registry spelling as the fuzz targets' model of the runtime says", func() {
		// The fuzz targets hold imagegate to runtimeref, a model of how containerd reads an
		// image string. Here the model is held to containerd: for each string, the host and
		// repository containerd asked the registry for must be the model's endpoint and
		// repository. Docker Hub's names are one registry, whose one-segment repositories are
		// under library/ (Docker Hub's rule, not containerd's: the model applies it to both).
		_, err := reg.Push("acme/app", "2.0")
		Expect(err).NotTo(HaveOccurred())
		for _, s := range []string{
			reg.Host + "/acme/app:2.0",
			"ghcr.io/acme/app:2.0", "ghcr.io:443/acme/app:2.0", "ghcr.io:0443/acme/app:2.0", "GHCR.io/acme/app:2.0",
			"Ghcr.IO:443/acme/app:2.0", "ghcr.io:8443/acme/app:2.0",
			"acme/app:2.0", "docker.io/acme/app:2.0", "index.docker.io/acme/app:2.0", "registry-1.docker.io/acme/app:2.0",
			"registry.hub.docker.com/acme/app:2.0", "docker.io:443/acme/app:2.0",
			"app:2.0", "library/app:2.0", "docker.io/app:2.0", "registry-1.docker.io/app:2.0",
			"localhost/acme/app:2.0", "localhost:5000/acme/app:2.0", "LOCALHOST:5000/acme/app:2.0",
			"[::1]:5000/acme/app:2.0", "[0:0:0:0:0:0:0:1]:5000/acme/app:2.0", "127.0.0.1:5000/acme/app:2.0",
			"foo.bar/a.b/c__d/e-f:2.0", "Foo/acme/app:2.0", "foo:443/acme/app:2.0",
		} {
			model, err := runtimeref.View(s)
			Expect(err).NotTo(HaveOccurred(), s)
			Expect(model.ImageID).To(BeFalse(), s)
			manifestRequests()
			// Whether the pull succeeds does not matter (most repositories are not there): the
			// first manifest request is where the runtime went.
			_, _ = node.Images.Pull(ctx, s, nil)
			requests := manifestRequests()
			Expect(requests).NotTo(BeEmpty(), "containerd asked the registry nothing for %s", s)
			host, path, _ := strings.Cut(requests[0], " ")
			repo, _, _ := strings.Cut(strings.TrimPrefix(path, "/v2/"), "/manifests/")
			endpoint := runtimeref.EndpointOf(host)
			if endpoint == "docker.io:443" && !strings.Contains(repo, "/") {
				repo = "library/" + repo
			}
			Expect(endpoint+"/"+repo).To(Equal(model.Endpoint+"/"+model.Repository), "containerd read %s as %s", s, requests[0])
		}
	})
	It("audits the digest the runtime reports it runs, not what the tag names now", func() {
		// A Pod no verify rule covers is admitted with a tag; the node pulls what the tag names
		// then (unsigned). The tag then moves to signed content, and a verify rule comes to
		// cover the Pod: the audit must judge the digest the runtime reported.
		unsigned, err := reg.Push("team/late", "1")
		Expect(err).NotTo(HaveOccurred())
		r := runOnNode("node-late", reg.Host+"/team/late:1")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(stored("node-late")).To(Equal(reg.Host + "/team/late:1"))
		// The kubelet pulled the tag and reports the first of the image's repo digests, as
		// containerd gives it, as the container's imageID.
		Expect(running("node-late")).To(Equal(unsigned.String()))

		signed, err := reg.Push("team/late", "1")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(signed)).To(Succeed())
		pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
		r = apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-node-late
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/team/**"]
    transparencyLog: Skip
    signers:
    - name: release
      key:
        publicKey: |
          %s
`, ns, reg.Host, pem))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-node-late") })
		Eventually(func() string {
			return kubectl("get", "clusterimagepolicy", "e2e-node-late", "-o=jsonpath={.status.audit.violations} {.status.audit.samples[*].pod} {.status.audit.samples[*].rule}")
		}).WithTimeout(60 * time.Second).Should(Equal("1 node-late verify"))
		Eventually(func() string {
			return kubectl("get", "events", "-n", ns, "--field-selector=reason=RunningImageRefused", "-o=jsonpath={.items[*].message}")
		}).WithTimeout(30 * time.Second).Should(ContainSubstring("container node-late (running " + unsigned.DigestStr() + `): spec.containers[0].image: image "` + reg.Host + `/team/late:1" is not allowed by ClusterImagePolicy "e2e-node-late": no signature by a trusted signer`))
		// The tag alone names signed content now: a new Pod is admitted, pinned to it.
		kubectl("run", "node-late-new", "-n", ns, "--image="+reg.Host+"/team/late:1")
		Expect(stored("node-late-new")).To(Equal(reg.Host + "/team/late:1@" + signed.DigestStr()))
	})
})
