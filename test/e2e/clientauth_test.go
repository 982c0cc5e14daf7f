//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// A kube-apiserver of its own that presents a client certificate to admission webhooks (its
// AdmissionConfiguration), and a manager that admits only callers with a certificate from
// that client CA (--webhook-client-ca): the apiserver's calls decide as usual, any other
// caller is refused at the TLS handshake.
var _ = Describe("Authenticated webhook callers", Ordered, func() {
	var (
		c        *localcluster.Cluster
		port     int
		serverCA *localcluster.CA
		dir      string
	)
	k := func(args ...string) result { return runOn(c, nil, args...) }

	BeforeAll(func(ctx SpecContext) {
		dir = GinkgoT().TempDir()
		var err error
		serverCA, err = localcluster.NewCA("imagegate-mtls-ca")
		Expect(err).NotTo(HaveOccurred())
		port, err = localcluster.FreePort()
		Expect(err).NotTo(HaveOccurred())
		auth, err := localcluster.WebhookClientAuth(dir, port)
		Expect(err).NotTo(HaveOccurred())

		c, err = localcluster.Start(ctx, localcluster.Options{
			BinDir:             os.Getenv("E2E_BIN_DIR"),
			CA:                 serverCA,
			ExtraAPIServerArgs: []string{auth.APIServerArg},
			Progress:           func(f string, a ...any) { GinkgoWriter.Printf(f+"\n", a...) },
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(c.Stop()).To(Succeed()) })

		r := k("apply", "-f", filepath.Join(root, "config", "crd", "bases"))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		r = k("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		mgr, err := c.StartManager(ctx, localcluster.ManagerOptions{
			Binary: filepath.Join(root, "bin", "manager"), WebhookPort: port,
			Args: []string{auth.ManagerArg},
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			if CurrentSpecReport().Failed() {
				GinkgoWriter.Println("manager log:\n" + mgr.Log())
			}
		})
		Expect(mgr.RegisterWebhook(root)).To(Succeed())
		r = runOn(c, []byte(trusted), "apply", "-f", "-")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		r = k("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-trusted", "--timeout=60s")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Eventually(func() error { return c.KubectlQuiet("get", "serviceaccount", "default", "-n", "default") }).
			WithTimeout(time.Minute).Should(Succeed())
	}, NodeTimeout(3*time.Minute))

	It("decides the apiserver's calls, which carry its client certificate", func() {
		Eventually(func() string {
			return k("run", "probe", "--image=quay.io/x/y:1", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))
		r := k("run", "web", "--image=ghcr.io/acme/web:1")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		r = k("run", "bad", "--image=docker.io/evil/miner:1")
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring(`spec.containers[0].image: image "docker.io/evil/miner:1" is not allowed by ClusterImagePolicy "e2e-trusted"`))
	})

	It("refuses any other caller at the TLS handshake", func() {
		roots := x509.NewCertPool()
		Expect(roots.AppendCertsFromPEM(serverCA.CertPEM)).To(BeTrue())
		other, err := localcluster.NewCA("someone-else")
		Expect(err).NotTo(HaveOccurred())
		forged, err := other.Client("kube-apiserver")
		Expect(err).NotTo(HaveOccurred())
		forgedPair, err := tls.X509KeyPair(forged.CertPEM, forged.KeyPEM)
		Expect(err).NotTo(HaveOccurred())
		url := "https://127.0.0.1:" + strconv.Itoa(port) + "/validate-v1-pod"
		for name, certs := range map[string][]tls.Certificate{"no client certificate": nil, "a certificate from another CA": {forgedPair}} {
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}}
			resp, err := client.Post(url, "application/json", strings.NewReader(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`))
			if resp != nil {
				_ = resp.Body.Close()
			}
			Expect(err).To(HaveOccurred(), name+" got an answer")
		}
	})
})
