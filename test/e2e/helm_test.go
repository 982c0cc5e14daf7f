//go:build e2e

package e2e

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/strvals"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// The Helm chart (dist/chart), installed with Helm's library into the local control plane and
// run as a cluster would run it: no kubelet runs the Deployment here, so its container runs as
// a process with the Deployment's own arguments and environment, as the chart's
// ServiceAccount (its RBAC is what the manager gets), serving the certificate the chart wrote
// to the Secret the Deployment mounts, behind an EndpointSlice of the chart's webhook Service
// (what the EndpointSlice controller makes for a ready Pod). The chart runs without
// cert-manager, so its own CA and certificate are what the apiserver trusts.
var _ = Describe("The Helm chart", Ordered, func() {
	const (
		ns       = "imagegate-helm"
		release  = "gate"
		fullname = "gate-imagegate"
		service  = fullname + "-webhook-service"
		vwcName  = fullname + "-validating-webhook-configuration"
	)
	var (
		helmCfg  *action.Configuration
		proc     *localcluster.Process
		caBundle string
		serial   string
	)

	// helmValues parses --set style values.
	helmValues := func(set ...string) map[string]any {
		GinkgoHelper()
		vals := map[string]any{}
		for _, s := range set {
			Expect(strvals.ParseInto(s, vals)).To(Succeed())
		}
		return vals
	}
	// The CRDs are already in the cluster (the suite applies config/crd/bases; the chart's are
	// the same files, test/integration/chart checks): the release leaves them alone.
	baseValues := []string{"image.repository=ghcr.io/imagegate/imagegate", "image.tag=v0.1.0", "certManager.enabled=false", "crds.install=false"}

	uninstall := func() *action.Uninstall {
		u := action.NewUninstall(helmCfg)
		u.WaitStrategy = kube.HookOnlyStrategy
		return u
	}
	servingSerial := func() string {
		GinkgoHelper()
		b64 := kubectl("get", "secret", "webhook-server-cert", "-n", ns, "-o=jsonpath={.data.tls\\.crt}")
		pemBytes, err := base64.StdEncoding.DecodeString(b64)
		Expect(err).NotTo(HaveOccurred())
		block, _ := pem.Decode(pemBytes)
		Expect(block).NotTo(BeNil())
		cert, err := x509.ParseCertificate(block.Bytes)
		Expect(err).NotTo(HaveOccurred())
		return cert.SerialNumber.String()
	}

	BeforeAll(func(ctx SpecContext) {
		if hostIP == nil {
			Skip("this machine has no non-loopback IPv4 address for the EndpointSlice")
		}
		// Only the chart's webhooks may answer in these specs.
		kubectl("delete", "validatingwebhookconfiguration", "imagegate-local-validating-webhook-configuration")
		kubectl("delete", "mutatingwebhookconfiguration", "imagegate-local-mutating-webhook-configuration")
		DeferCleanup(func() { Expect(manager.RegisterWebhook(root)).To(Succeed()) })

		kubeconfig := cluster.Kubeconfig
		namespaceName := ns
		flags := genericclioptions.NewConfigFlags(false)
		flags.KubeConfig, flags.Namespace = &kubeconfig, &namespaceName
		helmCfg = action.NewConfiguration()
		Expect(helmCfg.Init(flags, ns, "secret")).To(Succeed())

		chart, err := loader.Load(filepath.Join(root, "dist", "chart"))
		Expect(err).NotTo(HaveOccurred())
		install := action.NewInstall(helmCfg)
		install.ReleaseName, install.Namespace, install.CreateNamespace = release, ns, true
		// Nothing runs the Deployment here, so nothing to wait for (--wait=hookOnly).
		install.WaitStrategy, install.Timeout = kube.HookOnlyStrategy, time.Minute
		_, err = install.RunWithContext(ctx, chart, helmValues(baseValues...))
		Expect(err).NotTo(HaveOccurred(), "helm install")
		DeferCleanup(func() {
			_, _ = uninstall().Run(release)
			run("delete", "namespace", ns, "--wait=false")
		})
		caBundle = kubectl("get", "validatingwebhookconfiguration", vwcName, "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")
		Expect(caBundle).NotTo(BeEmpty(), "the chart set no caBundle")
		serial = servingSerial()

		// The Deployment's container, as the kubelet would start it.
		var dep struct {
			Spec struct {
				Template struct {
					Spec struct {
						ServiceAccountName string `json:"serviceAccountName"`
						Containers         []struct {
							Args         []string `json:"args"`
							VolumeMounts []struct {
								Name      string `json:"name"`
								MountPath string `json:"mountPath"`
							} `json:"volumeMounts"`
						} `json:"containers"`
						Volumes []struct {
							Name   string `json:"name"`
							Secret struct {
								SecretName string `json:"secretName"`
							} `json:"secret"`
						} `json:"volumes"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		Expect(json.Unmarshal([]byte(kubectl("get", "deployment", fullname+"-controller-manager", "-n", ns, "-o=json")), &dep)).To(Succeed())
		pod := dep.Spec.Template.Spec
		Expect(pod.Containers).To(HaveLen(1))
		// The serving certificate's Secret, and an emptyDir for the TUF metadata.
		Expect(pod.Volumes).To(HaveLen(2))
		volumes, mounts := map[string]string{}, map[string]string{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v.Secret.SecretName
		}
		for _, m := range pod.Containers[0].VolumeMounts {
			mounts[m.Name] = m.MountPath
		}
		Expect(volumes).To(HaveKeyWithValue("webhook-certs", "webhook-server-cert"))
		Expect(volumes).To(HaveKey("tuf-cache"))

		// The mounted Secret.
		certDir := filepath.Join(cluster.Dir, "helm-certs")
		Expect(os.MkdirAll(certDir, 0o700)).To(Succeed())
		for _, key := range []string{"tls.crt", "tls.key"} {
			b64 := kubectl("get", "secret", "webhook-server-cert", "-n", ns, "-o=jsonpath={.data."+strings.ReplaceAll(key, ".", "\\.")+"}")
			data, err := base64.StdEncoding.DecodeString(b64)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.WriteFile(filepath.Join(certDir, key), data, 0o600)).To(Succeed())
		}

		// The Deployment's arguments; what differs outside a Pod: the addresses (this host's
		// ports are shared), the mount path, and the Lease's namespace (in a Pod, read from the
		// ServiceAccount's mount).
		webhookPort, err := localcluster.FreePort()
		Expect(err).NotTo(HaveOccurred())
		healthPort, err := localcluster.FreePort()
		Expect(err).NotTo(HaveOccurred())
		metricsPort, err := localcluster.FreePort()
		Expect(err).NotTo(HaveOccurred())
		var args []string
		for _, a := range pod.Containers[0].Args {
			switch {
			case strings.HasPrefix(a, "--health-probe-bind-address="):
				a = "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(healthPort)
			case strings.HasPrefix(a, "--metrics-bind-address="):
				a = "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort)
			case strings.HasPrefix(a, "--webhook-cert-path="):
				Expect(a).To(Equal("--webhook-cert-path=" + mounts["webhook-certs"]))
				a = "--webhook-cert-path=" + certDir
			case strings.HasPrefix(a, "--tuf-cache-dir="):
				Expect(a).To(Equal("--tuf-cache-dir=" + mounts["tuf-cache"]))
				a = "--tuf-cache-dir=" + filepath.Join(cluster.Dir, "helm-tuf-cache")
			case a == "--shutdown-drain=10s":
				a = "--shutdown-drain=500ms"
			}
			args = append(args, a)
		}
		args = append(args, "--webhook-port="+strconv.Itoa(webhookPort), "--leader-election-namespace="+ns)

		// As the chart's ServiceAccount.
		token := strings.TrimSpace(kubectl("create", "token", pod.ServiceAccountName, "-n", ns, "--duration=1h"))
		saKubeconfig := filepath.Join(cluster.Dir, "helm-manager.kubeconfig")
		writeTokenKubeconfig(saKubeconfig, token)
		proc, err = cluster.Run("helm-manager", filepath.Join(root, "bin", "manager"),
			[]string{"KUBECONFIG=" + saKubeconfig, "POD_NAMESPACE=" + ns}, args...)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			if CurrentSpecReport().Failed() {
				GinkgoWriter.Println("chart manager log:\n" + proc.Log())
			}
			_ = proc.Stop()
		})
		Expect(proc.WaitHTTP(ctx, "http://127.0.0.1:"+strconv.Itoa(healthPort)+"/readyz", false)).To(Succeed())

		applyEndpointSlice(service, ns, webhookPort)

		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-helm
spec:
  images:
    allow: ["ghcr.io/acme/**"]
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-helm") })
		namespace("e2e-helm")
	}, NodeTimeout(3*time.Minute))

	It("admits and refuses Pods through the chart's webhook, Service and certificate", func() {
		Eventually(func() string {
			return run("run", "probe", "-n", "e2e-helm", "--image=docker.io/evil/miner:1", "--dry-run=server").stderr
		}).WithTimeout(30*time.Second).Should(ContainSubstring(denyMessage), func() string { return "chart manager log:\n" + proc.Log() })
		kubectl("run", "web", "-n", "e2e-helm", "--image=ghcr.io/acme/web:1")
		stderr := kubectlRefused("run", "bad", "-n", "e2e-helm", "--image=docker.io/evil/miner:1")
		Expect(stderr).To(ContainSubstring(denyMessage))
		Expect(stderr).To(ContainSubstring(`ClusterImagePolicy "e2e-helm"`))
		// The workload webhook answers too: a Deployment whose Pods would be refused is.
		stderr = kubectlRefused("create", "deployment", "bad", "-n", "e2e-helm", "--image=docker.io/evil/miner:1", "--dry-run=server")
		Expect(stderr).To(ContainSubstring(`admission webhook "workloads.imagegate.io" denied the request`))
		Expect(stderr).To(ContainSubstring(`ClusterImagePolicy "e2e-helm"`))
	})

	It("leaves the release namespace to the manager: its Pods are not checked", func() {
		r := run("run", "repair", "-n", ns, "--image=docker.io/evil/miner:1", "--dry-run=server")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
	})

	It("leads and writes policy status with only the chart's RBAC", func() {
		Eventually(func() string {
			return run("get", "lease", "imagegate.imagegate.io", "-n", ns, "-o=jsonpath={.spec.holderIdentity}").stdout
		}).WithTimeout(time.Minute).ShouldNot(BeEmpty())
		Expect(proc.Log()).NotTo(ContainSubstring("forbidden"))
	})

	It("keeps its CA across helm upgrade, issues a new serving certificate, and applies the new values", func(ctx SpecContext) {
		chart, err := loader.Load(filepath.Join(root, "dist", "chart"))
		Expect(err).NotTo(HaveOccurred())
		upgrade := action.NewUpgrade(helmCfg)
		upgrade.Namespace, upgrade.WaitStrategy = ns, kube.HookOnlyStrategy
		_, err = upgrade.RunWithContext(ctx, release, chart, helmValues(append(baseValues, "webhook.timeoutSeconds=7")...))
		Expect(err).NotTo(HaveOccurred(), "helm upgrade")
		Expect(kubectl("get", "validatingwebhookconfiguration", vwcName, "-o=jsonpath={.webhooks[0].clientConfig.caBundle}")).To(Equal(caBundle),
			"the upgrade changed the CA the webhooks trust: Pods would be refused until the manager loads the new certificate")
		Expect(kubectl("get", "validatingwebhookconfiguration", vwcName, "-o=jsonpath={.webhooks[0].timeoutSeconds}")).To(Equal("7"))
		Expect(servingSerial()).NotTo(Equal(serial), "the upgrade did not renew the serving certificate")
		// The running manager still serves the old certificate, from the same CA: still trusted.
		stderr := kubectlRefused("run", "bad2", "-n", "e2e-helm", "--image=docker.io/evil/miner:1")
		Expect(stderr).To(ContainSubstring(denyMessage))
	})

	It("removes its webhooks at helm uninstall and keeps the CA", func() {
		_, err := uninstall().Run(release)
		Expect(err).NotTo(HaveOccurred())
		Expect(run("get", "validatingwebhookconfiguration", vwcName).err).To(HaveOccurred())
		kubectl("run", "after", "-n", "e2e-helm", "--image=docker.io/evil/miner:1", "--dry-run=server")
		Expect(kubectl("get", "secret", fullname+"-ca", "-n", ns, "-o=name")).To(Equal("secret/" + fullname + "-ca\n"))
	})
})

// writeTokenKubeconfig writes a kubeconfig for the cluster that authenticates with token.
func writeTokenKubeconfig(path, token string) {
	GinkgoHelper()
	cfg, err := clientcmd.LoadFromFile(cluster.Kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	for _, info := range cfg.AuthInfos {
		info.ClientCertificateData, info.ClientKeyData = nil, nil
		info.ClientCertificate, info.ClientKey = "", ""
		info.Token = token
	}
	Expect(clientcmd.WriteToFile(*cfg, path)).To(Succeed())
}
