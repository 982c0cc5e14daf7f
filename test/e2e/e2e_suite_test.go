//go:build e2e

// Package e2e drives imagegate as a cluster would: the real manager binary (bin/manager), a
// real kube-apiserver, etcd and kube-controller-manager (test/utils/localcluster), the webhook
// registered from config/, and kubectl for every user action. `make test-e2e` runs it.
package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/imagegate/imagegate/test/utils/cloudtest"
	"github.com/imagegate/imagegate/test/utils/credentialtest"
	"github.com/imagegate/imagegate/test/utils/localcluster"
)

var (
	root    string
	cluster *localcluster.Cluster
	manager *localcluster.Manager
	// rendered is config/default as kustomize renders it, split into documents.
	rendered [][]byte
	// hostIP is a non-loopback address of this machine: EndpointSlices may not list loopback.
	hostIP net.IP
	// awsKMS is the AWS KMS the manager reads kms keys from, with its static credentials (on
	// EKS the SDK's default chain finds IRSA's or Pod Identity's instead).
	awsKMS *cloudtest.AWS
)

const e2eAccessKeyID = "AKIAIMAGEGATEE2E0001"

// The registry of the verify specs wants a password; the manager's image credential provider
// (a kubelet plugin, configured in BeforeSuite) answers for it.
const (
	verifyRegistryUser     = "ci"
	verifyRegistryPassword = "e2e-s3cret"
)

// verifyRegistryHost is the address the verify specs' registry listens on.
var verifyRegistryHost string

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "imagegate end-to-end")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	binDir := os.Getenv("E2E_BIN_DIR")
	Expect(binDir).NotTo(BeEmpty(), "E2E_BIN_DIR must name the folder of kube-apiserver, etcd, kube-controller-manager and kubectl: run `make test-e2e`")
	var err error
	root, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())

	out, err := exec.Command(filepath.Join(binDir, "kubectl"), "kustomize", filepath.Join(root, "config", "default")).Output()
	Expect(err).NotTo(HaveOccurred(), "rendering config/default")
	rendered, err = localcluster.SplitYAML(out)
	Expect(err).NotTo(HaveOccurred())
	hostIP = localcluster.HostIPv4()

	cluster, err = localcluster.Start(ctx, localcluster.Options{
		BinDir: binDir,
		// The apiserver calls a webhook Service by its EndpointSlice, as a cluster without
		// kube-proxy on the control plane does; the cert-manager spec relies on it.
		ExtraAPIServerArgs: []string{"--enable-aggregator-routing=true"},
		Progress:           func(f string, a ...any) { GinkgoWriter.Printf(f+"\n", a...) },
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(cluster.Stop()).To(Succeed()) })

	kubectl("apply", "-f", filepath.Join(root, "config", "crd", "bases"))
	kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
	applyAdmissionPolicies()

	// The serving certificate also covers the DNS names of config/default's Certificate, so
	// that the cert-manager spec can serve it as the Secret cert-manager would write.
	var ips []net.IP
	if hostIP != nil {
		ips = append(ips, hostIP)
	}
	awsKMS = cloudtest.NewAWS(e2eAccessKeyID)
	DeferCleanup(awsKMS.Close)
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_KMS": awsKMS.URL, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": e2eAccessKeyID, "AWS_SECRET_ACCESS_KEY": "e2e",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		Expect(os.Setenv(k, v)).To(Succeed()) // the manager's environment
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	verifyRegistryHost = l.Addr().String()
	Expect(l.Close()).To(Succeed())
	pluginDir := credentialtest.Plugin(GinkgoT())
	providerConfig := credentialtest.Config(GinkgoT(), verifyRegistryHost, verifyRegistryUser, verifyRegistryPassword)
	manager, err = cluster.StartManager(ctx, localcluster.ManagerOptions{
		Binary:   filepath.Join(root, "bin", "manager"),
		DNSNames: certificateDNSNames(),
		IPs:      ips,
		// Reports on, and an audit pass every 15 s so that the reports specs see a pod's
		// deletion without waiting the default 5 minutes.
		Args: []string{"--image-credential-provider-config=" + providerConfig, "--image-credential-provider-bin-dir=" + pluginDir,
			"--reports", "--audit-interval=15s", "--validating-webhook-configuration=" + localValidating},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(manager.RegisterWebhook(root)).To(Succeed())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Println("manager log:\n" + manager.Log())
		}
	})
}, NodeTimeout(5*time.Minute))

// localValidating is the ValidatingWebhookConfiguration that config/local registers.
const localValidating = "imagegate-local-validating-webhook-configuration"

// result is what a kubectl run printed.
type result struct {
	stdout, stderr string
	err            error
}

func run(args ...string) result {
	return runIn(nil, args...)
}

func runIn(stdin []byte, args ...string) result {
	cmd := cluster.Kubectl(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	GinkgoWriter.Printf("$ kubectl %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	return result{stdout.String(), stderr.String(), err}
}

// kubectl runs kubectl and fails the spec if it fails; it returns standard output.
func kubectl(args ...string) string {
	GinkgoHelper()
	r := run(args...)
	Expect(r.err).NotTo(HaveOccurred(), "kubectl %s: %s", strings.Join(args, " "), r.stderr)
	return r.stdout
}

// kubectlRefused runs kubectl, expects it to fail, and returns its standard error.
func kubectlRefused(args ...string) string {
	GinkgoHelper()
	r := run(args...)
	Expect(r.err).To(HaveOccurred(), "kubectl %s should have been refused; it printed %s", strings.Join(args, " "), r.stdout)
	return r.stderr
}

// apply pipes a manifest into kubectl apply.
func apply(manifest string) result {
	return runIn([]byte(manifest), "apply", "-f", "-")
}

// namespace creates a namespace with labels and waits for its default ServiceAccount, which
// Pods need; it is deleted after the spec.
func namespace(name string, labels ...string) {
	GinkgoHelper()
	kubectl("create", "namespace", name)
	if len(labels) > 0 {
		kubectl(append([]string{"label", "namespace", name}, labels...)...)
	}
	Eventually(func() error {
		return cluster.KubectlQuiet("get", "serviceaccount", "default", "-n", name)
	}).WithTimeout(time.Minute).Should(Succeed())
	DeferCleanup(func() { run("delete", "namespace", name, "--wait=false") })
}

// certificateDNSNames reads spec.dnsNames of the Certificate in config/default.
func certificateDNSNames() []string {
	GinkgoHelper()
	for _, doc := range rendered {
		// The serving certificate, not the CA that issues it.
		if !bytes.Contains(doc, []byte("kind: Certificate\n")) || !bytes.Contains(doc, []byte("\n  dnsNames:")) {
			continue
		}
		var names []string
		in := false
		for _, line := range strings.Split(string(doc), "\n") {
			switch {
			case strings.HasPrefix(line, "  dnsNames:"):
				in = true
			case in && strings.HasPrefix(line, "  - "):
				names = append(names, strings.TrimPrefix(line, "  - "))
			default:
				in = false
			}
		}
		Expect(names).NotTo(BeEmpty(), "config/default's serving Certificate has no dnsNames")
		return names
	}
	Fail("config/default renders no Certificate with dnsNames")
	return nil
}

// applyAdmissionPolicies applies config/default's ValidatingAdmissionPolicies and their
// bindings, which the apiserver runs itself. The uninstall spec deletes them: it applies them
// again for the specs that run after it.
func applyAdmissionPolicies() {
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		docs := renderedOf(kind)
		Expect(docs).NotTo(BeEmpty(), "config/default renders no %s", kind)
		for _, doc := range docs {
			r := apply(doc)
			Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		}
	}
}

// renderedOf returns the documents of config/default of the given kind.
func renderedOf(kind string) []string {
	var docs []string
	for _, doc := range rendered {
		if bytes.Contains(doc, []byte("\nkind: "+kind+"\n")) || bytes.HasPrefix(doc, []byte("kind: "+kind+"\n")) {
			docs = append(docs, string(doc))
		}
	}
	return docs
}

// applyEndpointSlice lists this machine's address and port as the ready endpoint of the
// Service, as the EndpointSlice controller would list a manager Pod.
func applyEndpointSlice(service, namespace string, port int) {
	GinkgoHelper()
	r := apply(fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-e2e
  namespace: %[2]s
  labels:
    kubernetes.io/service-name: %[1]s
    endpointslice.kubernetes.io/managed-by: e2e.imagegate.io
addressType: IPv4
ports:
- port: %[3]d
  protocol: TCP
endpoints:
- addresses: ["%[4]s"]
  conditions: {ready: true}
`, service, namespace, port, hostIP))
	Expect(r.err).NotTo(HaveOccurred(), r.stderr)
}

// stream calls body(w, i) for i = 0, 1, 2, ... on each of workers goroutines (w is the
// worker) until the returned stop is called; stop waits for them.
func stream(workers int, body func(w, i int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer GinkgoRecover()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				body(w, i)
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}
