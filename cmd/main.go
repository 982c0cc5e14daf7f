// Command manager runs imagegate: the Pod validating webhook and the reconciler that compiles
// ImagePolicies and ClusterImagePolicies into the snapshot the webhook decides with.
package main

import (
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/telemetry"
	webhookv1alpha1 "github.com/imagegate/imagegate/internal/webhook/v1alpha1"
)

func main() {
	var (
		metricsAddr, probeAddr                     string
		secureMetrics, enableHTTP2, leaderElection bool
		certDir, certName, keyName                 string
		webhookPort                                int
		imageReview, checkWorkloads                bool
		excludedNamespaces                         string
		auditInterval, eventInterval               time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to (HTTPS unless --metrics-secure=false); 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, to callers that the apiserver authenticates and authorizes.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&leaderElection, "leader-elect", false, "Elect a leader among replicas to write policy status; every replica serves the webhook.")
	flag.StringVar(&certDir, "webhook-cert-path", "/tmp/k8s-webhook-server/serving-certs", "Directory holding the webhook serving certificate; reloaded when it changes.")
	flag.StringVar(&certName, "webhook-cert-name", "tls.crt", "Certificate file name in --webhook-cert-path.")
	flag.StringVar(&keyName, "webhook-cert-key", "tls.key", "Key file name in --webhook-cert-path.")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	flag.BoolVar(&checkWorkloads, "check-workloads", true, "Check the pod templates of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs and ReplicationControllers at create and update (the webhook workloads.imagegate.io); false admits them all, and the Pods are still checked.")
	flag.BoolVar(&imageReview, "imagereview", true, "Also answer the kube-apiserver's ImagePolicyWebhook plugin (imagepolicy.k8s.io/v1alpha1 ImageReview) at /imagereview on the webhook port.")
	flag.StringVar(&excludedNamespaces, "excluded-namespaces", "imagegate-system,kube-system,kube-node-lease",
		"Comma-separated namespaces imagegate never decides: their ImageReviews are allowed and the audit skips them. Keep it equal to the namespaceSelector in config/webhook.")
	flag.DurationVar(&auditInterval, "audit-interval", 5*time.Minute, "Time between two background audits of the running Pods (one also runs shortly after each policy change); 0 disables the audit.")
	flag.DurationVar(&eventInterval, "event-interval", time.Minute, "At most one Event per policy and reason (Denied, Warned, BreakGlass) in this time; the next one counts the others.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Serve HTTP/2 on the webhook and metrics servers (off: HTTP/2 Rapid Reset, CVE-2023-44487).")
	opts := zap.Options{Development: false, TimeEncoder: zapcore.ISO8601TimeEncoder}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	must(log, clientgoscheme.AddToScheme(scheme), "registering the Kubernetes types")
	must(log, v1alpha1.AddToScheme(scheme), "registering the imagegate types")

	tlsOpts := []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}

	certWatcher, err := certwatcher.New(filepath.Join(certDir, certName), filepath.Join(certDir, keyName))
	must(log, err, "loading the webhook certificate", "dir", certDir)
	webhookTLS := slices.Concat(tlsOpts, []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = certWatcher.GetCertificate }})

	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		WebhookServer:          webhook.NewServer(webhook.Options{Port: webhookPort, TLSOpts: webhookTLS}),
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElection,
		LeaderElectionID:       "imagegate.imagegate.io",
		// The audit reads Pods from the cache: keep only what it needs of each.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: controller.AuditPodTransform},
		}},
	})
	must(log, err, "creating the manager")
	must(log, mgr.Add(certWatcher), "adding the certificate watcher")

	metrics, err := telemetry.NewMetrics(ctrlmetrics.Registry)
	must(log, err, "registering the metrics")
	recorder := &telemetry.Recorder{Metrics: metrics, Events: telemetry.NewEvents(mgr.GetEventRecorder("imagegate"), eventInterval)}
	excluded := splitList(excludedNamespaces)

	reconciler := controller.NewPolicyReconciler(mgr.GetClient(), metrics)
	must(log, reconciler.SetupWithManager(mgr), "setting up the policy reconciler")
	webhookv1alpha1.SetupPodWebhookWithManager(mgr, reconciler, recorder)
	webhookv1alpha1.SetupWorkloadWebhookWithManager(mgr, reconciler, checkWorkloads, recorder)
	if imageReview {
		webhookv1alpha1.SetupImageReviewWithManager(mgr, reconciler, excluded, recorder)
	}
	if auditInterval > 0 {
		must(log, mgr.Add(&controller.Auditor{
			Client: mgr.GetClient(), Cache: mgr.GetCache(), Snapshots: reconciler,
			Interval: auditInterval, Excluded: excluded, Metrics: metrics,
		}), "adding the audit")
	}

	// Start the Namespace informer (metadata only) with the manager, so the first Pod request
	// does not wait for it.
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	ctx := ctrl.SetupSignalHandler()
	_, err = mgr.GetCache().GetInformer(ctx, ns)
	must(log, err, "watching Namespaces")

	must(log, mgr.AddHealthzCheck("healthz", healthz.Ping), "adding the health check")
	must(log, mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()), "adding the webhook readiness check")
	must(log, mgr.AddReadyzCheck("policies", reconciler.ReadyCheck), "adding the policy readiness check")

	log.Info("Starting manager", "webhookPort", webhookPort, "certDir", certDir)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func must(log logr.Logger, err error, what string, kv ...any) {
	if err != nil {
		log.Error(err, "Failed "+what, kv...)
		os.Exit(1)
	}
}
