package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	reportsv1alpha1 "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podcache"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/test/utils/envtestutil"
)

// The suite runs the reconciler and the audit in a real manager against a real kube-apiserver
// and etcd, with the manager's own Pod cache (podcache). No webhook: Pods
// are created directly, as if admitted before any policy existed.

var (
	ctx             context.Context
	cancel          context.CancelFunc
	testEnv         *envtest.Environment
	k8sClient       client.Client
	metricsRegistry = prometheus.NewRegistry()
	// auditor is not started: specs run it and read what it wrote.
	auditor   *controller.Auditor
	snapshots *policy.Store
	// auditorCache is the manager's cache, for specs that start an audit of their own.
	auditorCache cache.Cache
	// podCache is the audit's cache of Pods.
	podCache *podcache.Cache
)

func TestController(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.TODO())
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(), "KUBEBUILDER_ASSETS must name the envtest binaries: run 'make test'")
	testEnv = &envtest.Environment{
		// The Report CRD as the reports-api module ships it (make manifests copies it there).
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases"), filepath.Join("..", "..", "dist", "chart", "files", "openreports")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(imagegatev1alpha1.AddToScheme(scheme)).To(Succeed())
	Expect(reportsv1alpha1.Install(scheme)).To(Succeed())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	Expect(err).NotTo(HaveOccurred())
	metrics, err := telemetry.NewMetrics(metricsRegistry)
	Expect(err).NotTo(HaveOccurred())
	snapshots = policy.NewStore()
	Expect(controller.NewPolicyReconciler(mgr.GetClient(), snapshots, controller.ReconcilerOptions{Metrics: metrics}).SetupWithManager(mgr)).To(Succeed())
	auditorCache = mgr.GetCache()
	podCache, err = podcache.New(cfg, false)
	Expect(err).NotTo(HaveOccurred())
	Expect(mgr.Add(podCache)).To(Succeed())
	auditor = &controller.Auditor{Client: mgr.GetClient(), Cache: mgr.GetCache(), Pods: podCache, Snapshots: snapshots, Interval: time.Hour, Excluded: []string{"kube-system"}, Metrics: metrics}

	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Eventually(snapshots.Snapshot).WithTimeout(20 * time.Second).ShouldNot(BeNil())
})

var _ = AfterSuite(func() {
	cancel()
	Expect(testEnv.Stop()).To(Succeed())
})

func newNamespace(labels map[string]string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + rand.String(6), Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func pod(ns, name string, images ...string) *corev1.Pod { return envtestutil.Pod(ns, name, images...) }

func createErr(obj client.Object) string {
	if err := k8sClient.Create(ctx, obj); err != nil {
		return err.Error()
	}
	return ""
}

var allowAcme = imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}}}

// clusterPolicy creates a ClusterImagePolicy that covers only ns and waits until it is in force.
func clusterPolicy(ns, name string, spec imagegatev1alpha1.ImagePolicySpec) *imagegatev1alpha1.ClusterImagePolicy {
	GinkgoHelper()
	return envtestutil.ClusterPolicy(ctx, k8sClient, ns, name, spec)
}

// metricValue reads one series of the suite's registry.
func metricValue(name string, labels map[string]string) float64 {
	GinkgoHelper()
	return envtestutil.MetricValue(metricsRegistry, name, labels)
}

// condition reads obj (a ClusterImagePolicy or an ImagePolicyException) and returns its
// condition of type typ as "Status/Reason: message", or why it could not.
func condition(obj client.Object, typ string) string {
	GinkgoHelper()
	fresh := obj.DeepCopyObject().(client.Object)
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), fresh); err != nil {
		return err.Error()
	}
	var conds []metav1.Condition
	switch o := fresh.(type) {
	case *imagegatev1alpha1.ClusterImagePolicy:
		conds = o.Status.Conditions
	case *imagegatev1alpha1.ImagePolicyException:
		conds = o.Status.Conditions
	}
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return string(c.Status) + "/" + c.Reason + ": " + c.Message
	}
	return ""
}

// cachedPods is what the audit's cache holds of a namespace's Pods, once it holds every Pod.
func cachedPods(ns string) []*podspec.Running {
	GinkgoHelper()
	pods, err := podCache.Pods(ctx, ns)
	Expect(err).NotTo(HaveOccurred())
	return pods
}

// cachedPod is what the audit's cache holds of a Pod, or nil.
func cachedPod(ns, name string) *podspec.Running {
	GinkgoHelper()
	for _, p := range cachedPods(ns) {
		if p.Name == name {
			return p
		}
	}
	return nil
}
