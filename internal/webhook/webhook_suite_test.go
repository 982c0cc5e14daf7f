package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podcache"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/envtestutil"
)

// The suite runs the real manager (reconciler and webhook server) against a real
// kube-apiserver and etcd, with the webhook registered from config/webhook as kustomize
// renders it, so the shipped configuration is what is tested.

var (
	ctx       context.Context
	cancel    context.CancelFunc
	testEnv   *envtest.Environment
	k8sClient client.Client
	warnings  *envtestutil.WarningRecorder
	// metricsRegistry holds the metrics of this suite's manager (metrics).
	metricsRegistry = prometheus.NewRegistry()
	metrics         *telemetry.Metrics
	root            = filepath.Join("..", "..")
	// trustNamespace stands for imagegate's own namespace: verify rules read Secrets and
	// ConfigMaps there.
	trustNamespace = "imagegate-system"
)

func TestWebhook(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Pod webhook suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.TODO())

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	Expect(assets).NotTo(BeEmpty(), "KUBEBUILDER_ASSETS must name the envtest binaries: run 'make test'")
	rendered, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, "config", "webhook")).Output()
	Expect(err).NotTo(HaveOccurred(), "rendering config/webhook")
	webhookDir := GinkgoT().TempDir()
	Expect(os.WriteFile(filepath.Join(webhookDir, "webhook.yaml"), rendered, 0o600)).To(Succeed())

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{webhookDir}},
	}
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(imagegatev1alpha1.AddToScheme(scheme)).To(Succeed())

	warnings = &envtestutil.WarningRecorder{}
	userCfg := rest.CopyConfig(cfg)
	userCfg.WarningHandler = warnings
	k8sClient, err = client.New(userCfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	wio := &testEnv.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir,
		}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	Expect(err).NotTo(HaveOccurred())
	metrics, err = telemetry.NewMetrics(metricsRegistry)
	Expect(err).NotTo(HaveOccurred())
	recorder := &telemetry.Recorder{Metrics: metrics, Events: telemetry.NewEvents(mgr.GetEventRecorder("imagegate"), time.Minute)}
	store := policy.NewStore()
	reconciler := controller.NewPolicyReconciler(mgr.GetClient(), store, controller.ReconcilerOptions{
		Metrics:        metrics,
		Trust:          verify.Compiler(verify.NamespaceSources{Reader: mgr.GetCache(), Namespace: trustNamespace}),
		TrustNamespace: trustNamespace,
	})
	Expect(reconciler.SetupWithManager(mgr)).To(Succeed())
	verifier := verify.New(verify.Options{})
	// Pods' own pull secrets on, as --pull-secrets-from-pods turns them on.
	podCredentials := &verify.PodCredentials{Reader: mgr.GetAPIReader()}
	SetupPinWebhookWithManager(mgr, store, recorder, verifier, podCredentials)
	SetupPodWebhookWithManager(mgr, store, recorder, verifier, podCredentials)
	SetupWorkloadWebhookWithManager(mgr, store, true, recorder)
	pods, err := podcache.New(cfg, false)
	Expect(err).NotTo(HaveOccurred())
	Expect(mgr.Add(pods)).To(Succeed())
	SetupPreflightWebhookWithManager(mgr, &Preflight{
		Cache: mgr.GetCache(), Pods: pods, Client: mgr.GetClient(), Known: verifier.Known(), Excluded: []string{"kube-system"}, Warn: true,
		Trust: verify.Compiler(verify.NamespaceSources{Reader: mgr.GetCache(), Namespace: trustNamespace}),
	})

	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()

	addr := net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort))
	Eventually(func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe of the test's own server
		if err != nil {
			return err
		}
		return conn.Close()
	}).Should(Succeed())
	Eventually(store.Snapshot).WithTimeout(20 * time.Second).ShouldNot(BeNil())
})

var _ = AfterSuite(func() {
	cancel()
	Expect(testEnv.Stop()).To(Succeed())
})
