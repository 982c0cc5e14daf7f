//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// Install, upgrade and uninstall with hack/install.sh and the steps of `make undeploy`, during
// a stream of Pod creates in a covered namespace: no create may fail for any reason but a
// policy decision. The test plays what a cluster does beside the manifests: cert-manager
// (the serving certificate's Secret), the kubelet (manager processes), and the EndpointSlice
// controller (a replica is listed once ready, and leaves before it stops).
var _ = Describe("Install, upgrade and uninstall", Ordered, func() {
	const (
		ns      = "imagegate-system"
		service = "imagegate-webhook-service"
		covered = "e2e-lifecycle"
	)
	var (
		cs       *kubernetes.Clientset
		replicas []*localcluster.Manager
		binDir   = os.Getenv("E2E_BIN_DIR")
		mu       sync.Mutex
		counts   = map[string]int{}
		stop     func()
		// The manifests of the version installed first and of the upgrade.
		previousManifest = filepath.Join(os.TempDir(), fmt.Sprintf("imagegate-previous-%d.yaml", os.Getpid()))
		currentManifest  = filepath.Join(os.TempDir(), fmt.Sprintf("imagegate-current-%d.yaml", os.Getpid()))
	)
	setEndpoint := func(ctx context.Context, i int, ready bool) {
		GinkgoHelper()
		setReplicaEndpoint(ctx, cs, fmt.Sprintf("%s-lifecycle-%d", service, i), replicas[i], ready)
	}
	// install runs hack/install.sh on a rendered manifest as a user would, in the background.
	install := func(manifest string) (done <-chan error, out *bytes.Buffer) {
		cmd := exec.Command(filepath.Join(root, "hack", "install.sh"), manifest)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster.Kubeconfig, "KUBECTL="+filepath.Join(binDir, "kubectl"), "TIMEOUT=120")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		ch := make(chan error, 1)
		Expect(cmd.Start()).To(Succeed())
		go func() { ch <- cmd.Wait() }()
		return ch, &buf
	}
	webhookConfigurations := func() string {
		return run("get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o=name").stdout
	}

	BeforeAll(func(ctx SpecContext) {
		if hostIP == nil {
			Skip("this machine has no non-loopback IPv4 address for the EndpointSlices")
		}
		crds := os.Getenv("E2E_CERT_MANAGER_DIR")
		Expect(crds).NotTo(BeEmpty(), "E2E_CERT_MANAGER_DIR must name the cert-manager module folder: run `make test-e2e`")
		kubectl("apply", "-f", filepath.Join(crds, "deploy", "crds"))
		kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io", "--timeout=60s")
		var err error
		cs, err = kubernetes.NewForConfig(restConfig())
		Expect(err).NotTo(HaveOccurred())

		// What other specs may have left in imagegate-system (they run in random order): a
		// serving certificate's Secret or an endpoint would make the script's wait meaningless.
		run("delete", "secret", "webhook-server-cert", "-n", ns, "--ignore-not-found")
		run("delete", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name="+service, "--ignore-not-found")

		// Only the installation under test may answer.
		kubectl("delete", "validatingwebhookconfiguration", "imagegate-local-validating-webhook-configuration")
		kubectl("delete", "mutatingwebhookconfiguration", "imagegate-local-mutating-webhook-configuration")
		DeferCleanup(func() { Expect(manager.RegisterWebhook(root)).To(Succeed()) })
		// The uninstall spec deletes config/default's ValidatingAdmissionPolicies too.
		DeferCleanup(applyAdmissionPolicies)

		DeferCleanup(func() { _ = os.Remove(previousManifest); _ = os.Remove(currentManifest) })
		namespace(covered)
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-lifecycle
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  images:
    allow: ["ghcr.io/acme/**"]
`, covered))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-lifecycle", "--ignore-not-found") })

		stop = stream(2, func(w, i int) {
			image := "ghcr.io/acme/app:1"
			if i%2 == 1 {
				image = "quay.io/evil/app:1"
			}
			got := createPod(context.Background(), cs, covered, fmt.Sprintf("life-%d-%d", w, i), image)
			mu.Lock()
			counts[got]++
			mu.Unlock()
		})
		DeferCleanup(func() {
			if stop != nil {
				stop()
			}
			for _, m := range replicas {
				_ = m.Stop()
			}
		})
	}, NodeTimeout(3*time.Minute))

	It("installs: the webhook configurations come last, with the CA, once a replica is ready", func(ctx SpecContext) {
		// The version installed first has no mutating webhook (as before pinning existed):
		// the upgrade below adds it.
		var previous []string
		for _, doc := range rendered {
			if !bytes.Contains(doc, []byte("\nkind: MutatingWebhookConfiguration\n")) && !bytes.HasPrefix(doc, []byte("kind: MutatingWebhookConfiguration\n")) {
				previous = append(previous, string(doc))
			}
		}
		Expect(previous).To(HaveLen(len(rendered) - 1))
		Expect(os.WriteFile(previousManifest, []byte(strings.Join(previous, "\n---\n")), 0o600)).To(Succeed())
		done, out := install(previousManifest)
		// The manifests arrive; the script waits for a ready replica and applies no webhook
		// configuration before.
		Eventually(func() error {
			_, err := cs.CoreV1().Services(ns).Get(ctx, service, metav1.GetOptions{})
			return err
		}).WithTimeout(time.Minute).Should(Succeed(), func() string { return out.String() })
		time.Sleep(3 * time.Second)
		Expect(webhookConfigurations()).NotTo(ContainSubstring("imagegate-"), "applied before a replica was ready")

		// cert-manager's part: the serving certificate's Secret, with the CA.
		for range 2 {
			m, err := cluster.StartManager(ctx, localcluster.ManagerOptions{
				Binary: filepath.Join(root, "bin", "manager"), DNSNames: certificateDNSNames(), IPs: []net.IP{hostIP},
				Args: []string{"--leader-elect", "--leader-election-namespace=" + ns, "--shutdown-drain=2s", "--audit-interval=1h"},
			})
			Expect(err).NotTo(HaveOccurred())
			replicas = append(replicas, m)
		}
		kubectl("create", "secret", "generic", "webhook-server-cert", "-n", ns, "--type=kubernetes.io/tls",
			"--from-file=tls.crt="+filepath.Join(replicas[0].CertDir, "tls.crt"),
			"--from-file=tls.key="+filepath.Join(replicas[0].CertDir, "tls.key"),
			"--from-file=ca.crt="+filepath.Join(cluster.Dir, "ca.crt"))
		for i := range replicas {
			setEndpoint(ctx, i, true)
		}
		Eventually(done).WithTimeout(2*time.Minute).Should(Receive(BeNil()), func() string { return out.String() })
		Expect(webhookConfigurations()).To(ContainSubstring("imagegate-validating-webhook-configuration"))
		Expect(webhookConfigurations()).NotTo(ContainSubstring("imagegate-mutating-webhook-configuration"))
		b64 := kubectl("get", "validatingwebhookconfiguration", "imagegate-validating-webhook-configuration", "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")
		Expect(base64.StdEncoding.DecodeString(b64)).To(Equal(cluster.CA.CertPEM))

		// From now on, policy decisions.
		Eventually(func() string {
			return createPod(ctx, cs, covered, "probe-"+fmt.Sprint(time.Now().UnixNano()), "quay.io/evil/app:1")
		}).WithTimeout(30 * time.Second).Should(Equal("denied"))
	})

	It("upgrades to a version with another webhook: the script again while the replicas restart one by one", func(ctx SpecContext) {
		Expect(os.WriteFile(currentManifest, []byte(strings.Join(func() []string {
			var docs []string
			for _, d := range rendered {
				docs = append(docs, string(d))
			}
			return docs
		}(), "\n---\n")), 0o600)).To(Succeed())
		done, out := install(currentManifest)
		for i, m := range replicas {
			setEndpoint(ctx, i, false)
			time.Sleep(500 * time.Millisecond) // the apiserver's informer sees the slice change
			Expect(m.Stop()).To(Succeed())
			Expect(m.Start(ctx)).To(Succeed())
			setEndpoint(ctx, i, true)
			time.Sleep(time.Second)
		}
		Eventually(done).WithTimeout(2*time.Minute).Should(Receive(BeNil()), func() string { return out.String() })
		Expect(webhookConfigurations()).To(ContainSubstring("imagegate-mutating-webhook-configuration"))
		b64 := kubectl("get", "mutatingwebhookconfiguration", "imagegate-mutating-webhook-configuration", "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")
		Expect(base64.StdEncoding.DecodeString(b64)).To(Equal(cluster.CA.CertPEM))
		Expect(createPod(ctx, cs, covered, "after-upgrade", "quay.io/evil/app:1")).To(Equal("denied"))
	})

	It("uninstalls: the webhook configurations first, then the rest; the policies stay", func(ctx SpecContext) {
		// The steps of `make undeploy`.
		kubectl("delete", "--ignore-not-found", "validatingwebhookconfiguration", "imagegate-validating-webhook-configuration")
		kubectl("delete", "--ignore-not-found", "mutatingwebhookconfiguration", "imagegate-mutating-webhook-configuration")
		uninstall := kubectl("kustomize", filepath.Join(root, "config", "uninstall"))
		r := runIn([]byte(uninstall), "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		time.Sleep(2 * time.Second)
		for i, m := range replicas {
			setEndpoint(ctx, i, false)
			Expect(m.Stop()).To(Succeed())
		}
		replicas = nil
		time.Sleep(2 * time.Second)
		stop()
		stop = nil
		Expect(kubectl("get", "clusterimagepolicy", "e2e-lifecycle", "-o=name")).NotTo(BeEmpty(), "policies survive an uninstall")
		Expect(run("get", "validatingadmissionpolicies,validatingadmissionpolicybindings", "-o=name").stdout).NotTo(ContainSubstring("imagegate-"), "the uninstall removes the ValidatingAdmissionPolicies")
		// The uninstall deletes imagegate-system; the specs that run next create it again.
		Eventually(func() error { return run("get", "namespace", ns).err }).WithTimeout(2 * time.Minute).Should(HaveOccurred())

		AddReportEntry("creates across install, upgrade and uninstall", fmt.Sprint(counts))
		mu.Lock()
		defer mu.Unlock()
		for outcome, n := range counts {
			Expect(outcome).To(BeElementOf("admitted", "denied"), "%d creates got %q: %v", n, outcome, counts)
		}
		Expect(counts["denied"]).To(BeNumerically(">", 10), "the stream ran while imagegate was installed: %v", counts)
	})
})
