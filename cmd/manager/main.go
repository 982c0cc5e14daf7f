// Command manager runs imagegate: the Pod validating webhook and the reconciler that compiles
// ImagePolicies and ClusterImagePolicies into the snapshot the webhook decides with.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	reportsv1alpha1 "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
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
	"github.com/imagegate/imagegate/internal/credentials"
	"github.com/imagegate/imagegate/internal/podcache"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/telemetry"
	"github.com/imagegate/imagegate/internal/verify"
	imagegateversion "github.com/imagegate/imagegate/internal/version"
	imagegatewebhook "github.com/imagegate/imagegate/internal/webhook"
)

// version is set at build time (make build: -ldflags "-X main.version=...").
var version = ""

// options are the manager's flags.
type options struct {
	showVersion                                bool
	metricsAddr, probeAddr                     string
	secureMetrics, enableHTTP2, leaderElection bool
	certDir, certName, keyName                 string
	clientCA                                   string
	webhookPort                                int
	imageReview, checkWorkloads                bool
	reports, preflight                         bool
	excludedNamespaces, leaderElectionNS       string
	namespace                                  string
	pullSecretsFromPods                        bool
	tufCacheDir                                string
	namespaceInternalRegistries                string
	credentialProviderConfig                   string
	credentialProviderBinDir                   string
	cloudRegistryCredentials                   string
	pinScope                                   string
	admissionPolicies                          bool
	validatingConfiguration                    string
	auditInterval, eventInterval, drain        time.Duration
	exceptionExpiryWarning                     time.Duration
	zap                                        zap.Options
}

// validate refuses flag combinations that would weaken the gate.
func (o *options) validate() error {
	if (o.credentialProviderConfig == "") != (o.credentialProviderBinDir == "") {
		return errors.New("--image-credential-provider-config and --image-credential-provider-bin-dir go together")
	}
	if o.cloudRegistryCredentials != "" {
		if _, err := credentials.NewCloud(splitList(o.cloudRegistryCredentials)); err != nil {
			return fmt.Errorf("--cloud-registry-credentials: %w", err)
		}
	}
	if o.pullSecretsFromPods && o.clientCA == "" {
		// A review's namespace and pull-secret names are the caller's word: without client
		// authentication, anyone who reaches the webhook port could make the manager use
		// another namespace's Secrets, against registries of the caller's choosing.
		return errors.New("--pull-secrets-from-pods needs --webhook-client-ca: without client authentication any caller that reaches the webhook port could name another namespace's pull secrets in a forged review (docs/install.md, \"Authenticating the apiserver\")")
	}
	return nil
}

// bindFlags defines the manager's flags on fs.
func bindFlags(fs *flag.FlagSet) *options {
	o := &options{zap: zap.Options{Development: false, TimeEncoder: zapcore.ISO8601TimeEncoder}}
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to (HTTPS unless --metrics-secure=false); 0 disables it.")
	fs.BoolVar(&o.secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, to callers that the apiserver authenticates and authorizes.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	fs.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "imagegate-system"), "imagegate's own namespace, whose Secrets (keys, registry credentials) and ConfigMaps (trusted roots) verify rules may name; default $POD_NAMESPACE, else imagegate-system.")
	fs.StringVar(&o.tufCacheDir, "tuf-cache-dir", "", "Where the metadata of the TUF repositories that verify rules' tufRoots name is kept between fetches (a writable volume); empty: in memory only.")
	fs.BoolVar(&o.pullSecretsFromPods, "pull-secrets-from-pods", false, "Also use each Pod's imagePullSecrets and its ServiceAccount's to read the images its verify rules check. Needs read access to Secrets and ServiceAccounts in every namespace: the config/pod-pull-secrets overlay grants it (see docs/security.md).")
	fs.StringVar(&o.namespaceInternalRegistries, verify.NamespaceInternalRegistriesFlag, "", "Comma-separated registries (host or host:port, as images name them) on internal addresses that the verify rules of namespaces' ImagePolicies may make imagegate read, such as the cluster's own registry. For any other registry those rules reach only public addresses, so that a namespace cannot point imagegate at the cluster's network. ClusterImagePolicies are not limited.")
	fs.StringVar(&o.credentialProviderConfig, "image-credential-provider-config", "", "A kubelet CredentialProviderConfig file (kubelet.config.k8s.io/v1): its image credential provider plugins give the credentials for the registries they match (ECR, Artifact Registry, ACR... through the manager's own cloud identity), for verify rules without pullSecrets. Empty: none.")
	fs.StringVar(&o.credentialProviderBinDir, "image-credential-provider-bin-dir", "", "The directory holding the plugins that --image-credential-provider-config names.")
	fs.StringVar(&o.cloudRegistryCredentials, "cloud-registry-credentials", "", "Comma-separated clouds whose registries the manager reads with its own cloud identity, for verify rules without pullSecrets (after the image credential providers): ecr (the AWS SDK's default chain: IRSA, EKS Pod Identity), google (application default credentials: GKE Workload Identity), acr (Azure workload identity exchanged for an ACR refresh token). Empty: none.")
	fs.BoolVar(&o.leaderElection, "leader-elect", false, "Elect a leader among replicas to write policy status and run the audit; every replica serves the webhook.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease; empty: the manager's own namespace (in a cluster).")
	fs.StringVar(&o.certDir, "webhook-cert-path", "", "Directory holding the webhook serving certificate, reloaded when it changes (the installation sets it). Empty: a self-signed certificate made at start, which no apiserver trusts unless told to; for `make run` and local development only.")
	fs.StringVar(&o.certName, "webhook-cert-name", "tls.crt", "Certificate file name in --webhook-cert-path.")
	fs.StringVar(&o.keyName, "webhook-cert-key", "tls.key", "Key file name in --webhook-cert-path.")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	fs.StringVar(&o.clientCA, "webhook-client-ca", "", "PEM file of the CAs whose client certificates may call the webhook port (the apiserver's, given to it in its AdmissionConfiguration); every other caller is refused at the TLS handshake. Empty: any caller. Read at start: restart the manager after changing it.")
	fs.StringVar(&o.pinScope, "pin-scope-configuration", "", "Name of the MutatingWebhookConfiguration of the pinning webhook (pin.pods.imagegate.io): the leader keeps its match condition verify-rules in step with the verify rules in force, so that the apiserver calls the pinning webhook only for Pods with an unpinned image a verify rule may cover, and never without a verify rule. Empty: the condition is not kept, and every Pod with an unpinned image is sent (the manager needs get and patch on that configuration).")
	fs.BoolVar(&o.admissionPolicies, "admission-policies", false, "Compile the policies' name rules (patterns, tags, digests, selectors, modes, break-glass) into ValidatingAdmissionPolicies that the kube-apiserver evaluates itself, and keep a match condition on the Pod webhook so that it is called only for Pods a verify rule may cover, with an image CEL does not normalize exactly, or covered by a policy kept in the webhook (each policy's InAPIServer condition says which). Name rules then cost no webhook call and hold while imagegate is down. Off: removes what an earlier run in this mode wrote. See docs/admission-policies.md.")
	fs.StringVar(&o.validatingConfiguration, "validating-webhook-configuration", "imagegate-validating-webhook-configuration", "Name of the ValidatingWebhookConfiguration of the Pod webhook (pods.imagegate.io), whose match condition --admission-policies keeps. Empty: neither --admission-policies nor its removal runs.")
	fs.BoolVar(&o.checkWorkloads, "check-workloads", true, "Check the pod templates of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs and ReplicationControllers at create and update (the webhook workloads.imagegate.io); false admits them all, and the Pods are still checked.")
	fs.BoolVar(&o.reports, "reports", false, "Write the audit's results as OpenReports Reports (openreports.io/v1alpha1), one per namespace, for Policy Reporter and other report readers; needs the Report CRD (the Helm chart's reports.installCRDs), else says so in the log and imagegate_reports_enabled. See docs/reports.md.")
	fs.BoolVar(&o.preflight, "policy-preflight", true, "Answer each change of an ImagePolicy or ClusterImagePolicy (kubectl apply, --dry-run=server too) with warnings naming the running Pods it would refuse at their next restart (the webhook preflight.imagegate.io). Every replica then keeps the running Pods in its cache, as the leader does for the audit. See docs/reports.md.")
	fs.BoolVar(&o.imageReview, "imagereview", true, "Also answer the kube-apiserver's ImagePolicyWebhook plugin (imagepolicy.k8s.io/v1alpha1 ImageReview) at /imagereview on the webhook port.")
	fs.StringVar(&o.excludedNamespaces, podspec.ExcludedNamespacesFlag, podspec.DefaultExcludedNamespacesValue(),
		"Comma-separated namespaces imagegate never decides: their ImageReviews are allowed and the audit skips them. Keep it equal to the namespaceSelector in config/webhook.")
	fs.DurationVar(&o.drain, "shutdown-drain", 10*time.Second, "On SIGTERM, keep serving this long with readiness failing, so that the Pod leaves the webhook Service's endpoints before the server closes; a second signal exits at once.")
	fs.DurationVar(&o.auditInterval, "audit-interval", 5*time.Minute, "Time between two background audits of the running Pods (one also runs shortly after each policy change); 0 disables the audit.")
	fs.DurationVar(&o.exceptionExpiryWarning, "exception-expiry-warning", 72*time.Hour, "How long before an ImagePolicyException's expiresAt it is reported as expiring soon: its Active condition's reason ExpiringSoon, an Event, the imagegate_exceptions{state=\"ExpiringSoon\"} metric.")
	fs.DurationVar(&o.eventInterval, "event-interval", time.Minute, "At most one Event per policy and reason (Denied, Warned, BreakGlass) in this time; the next one counts the others.")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false, "Serve HTTP/2 on the webhook and metrics servers (off: HTTP/2 Rapid Reset, CVE-2023-44487).")
	fs.BoolVar(&o.showVersion, "version", false, "Print the version and exit.")
	o.zap.BindFlags(fs)
	return o
}

func main() {
	o := bindFlags(flag.CommandLine)
	flag.Parse()
	if o.showVersion {
		fmt.Println("imagegate manager", imagegateversion.Of(version))
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	log := ctrl.Log.WithName("setup")
	must(log, o.validate(), "checking the flags")

	scheme := runtime.NewScheme()
	must(log, clientgoscheme.AddToScheme(scheme), "registering the Kubernetes types")
	must(log, v1alpha1.AddToScheme(scheme), "registering the imagegate types")
	must(log, reportsv1alpha1.Install(scheme), "registering the OpenReports types")

	tlsOpts := []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}
	if !o.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}

	if o.certDir == "" {
		var err error
		o.certDir, err = selfSignedCertificate(o.certName, o.keyName)
		must(log, err, "making a self-signed webhook certificate")
		log.Info("No --webhook-cert-path: serving a self-signed certificate that no apiserver trusts unless told to; for local development only", "dir", o.certDir)
	}
	certWatcher, err := certwatcher.New(filepath.Join(o.certDir, o.certName), filepath.Join(o.certDir, o.keyName))
	must(log, err, "loading the webhook certificate", "dir", o.certDir)
	webhookTLS := slices.Concat(tlsOpts, []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = certWatcher.GetCertificate }})
	if o.clientCA != "" {
		requireClientCert, err := clientCertificates(o.clientCA)
		must(log, err, "loading the webhook's client CA", "file", o.clientCA)
		webhookTLS = append(webhookTLS, requireClientCert)
		log.Info("The webhook port admits only callers with a client certificate from the client CA", "file", o.clientCA)
	}

	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.secureMetrics, TLSOpts: tlsOpts}
	if o.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		WebhookServer:           webhook.NewServer(webhook.Options{Port: o.webhookPort, TLSOpts: webhookTLS}),
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElection,
		LeaderElectionID:        "imagegate.imagegate.io",
		LeaderElectionNamespace: o.leaderElectionNS,
		// Nothing reads managedFields, so no cached object keeps them (about 1 KiB per
		// policy). Pods have a cache of their own (podcache).
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
			// Verify rules read keys, trusted roots and credentials from imagegate's own
			// namespace only (a Role there, never cluster-wide read of Secrets).
			&corev1.Secret{}:    {Namespaces: map[string]cache.Config{o.namespace: {}}},
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{o.namespace: {}}},
		}},
	})
	must(log, err, "creating the manager")
	must(log, mgr.Add(certWatcher), "adding the certificate watcher")

	metrics, err := telemetry.NewMetrics(ctrlmetrics.Registry)
	must(log, err, "registering the metrics")
	must(log, telemetry.RegisterCertificateExpiry(ctrlmetrics.Registry, func() time.Time {
		cert, err := certWatcher.GetCertificate(nil)
		if err != nil || cert == nil || cert.Leaf == nil {
			return time.Time{}
		}
		return cert.Leaf.NotAfter
	}), "registering the certificate metric")
	recorder := &telemetry.Recorder{Metrics: metrics, Events: telemetry.NewEvents(mgr.GetEventRecorder("imagegate"), o.eventInterval)}
	excluded := splitList(o.excludedNamespaces)

	snapshots := policy.NewStore()
	// KMS keys and TUF trusted roots are fetched with the manager's own identity, in the
	// background.
	remote := &verify.Remote{TUF: verify.TUFOptions{CacheDir: o.tufCacheDir}, Log: func(what string, err error, cached bool) {
		log.Info("Trust material could not be fetched", "what", what, "error", err.Error(), "cachedCopyInUse", cached)
	}}
	must(log, mgr.Add(remote), "adding the KMS key and TUF root cache")
	reconciler := controller.NewPolicyReconciler(mgr.GetClient(), snapshots, controller.ReconcilerOptions{
		Metrics:        metrics,
		Trust:          verify.Compiler(verify.NamespaceSources{Reader: mgr.GetCache(), Namespace: o.namespace, Remote: remote}),
		TrustNamespace: o.namespace,
		Events:         mgr.GetEventRecorder("imagegate"),
		ExpiryWarning:  o.exceptionExpiryWarning,

		AdmissionPolicies: o.admissionPolicies,
	})
	must(log, reconciler.SetupWithManager(mgr), "setting up the policy reconciler")
	remote.OnChange = reconciler.Rebuild
	tenantRegistries := map[string]bool{}
	for _, r := range splitList(o.namespaceInternalRegistries) {
		tenantRegistries[strings.ToLower(r)] = true
	}
	keychain, err := credentials.Keychain(o.credentialProviderConfig, o.credentialProviderBinDir, o.cloudRegistryCredentials, func(provider, stderr string) {
		log.Info("An image credential provider failed", "provider", provider, "stderr", stderr)
	})
	must(log, err, "reading the registry credential flags")
	// The nodes' platforms, for verify rules that trust an image index by its platforms.
	nodePlatforms := &controller.NodePlatforms{}
	verifier := verify.New(verify.Options{
		Keychain:                    keychain,
		Metrics:                     verify.NewMetrics(ctrlmetrics.Registry),
		NamespaceInternalRegistries: func(r string) bool { return tenantRegistries[strings.ToLower(r)] },
		Platforms:                   nodePlatforms.Platforms,
	})
	var podCredentials *verify.PodCredentials
	if o.pullSecretsFromPods {
		podCredentials = &verify.PodCredentials{Reader: mgr.GetAPIReader()}
		log.Info("Verify rules also use each Pod's own pull secrets (--pull-secrets-from-pods): the manager reads Secrets and ServiceAccounts in every namespace")
	}
	// The running Pods, for the audit (on the leader) and the preflight (on every replica).
	var pods *podcache.Cache
	if o.auditInterval > 0 || o.preflight {
		pods, err = podcache.New(mgr.GetConfig(), !o.preflight)
		must(log, err, "making the Pod cache")
		must(log, mgr.Add(pods), "adding the Pod cache")
	}
	imagegatewebhook.SetupPinWebhookWithManager(mgr, snapshots, recorder, verifier, podCredentials)
	imagegatewebhook.SetupPodWebhookWithManager(mgr, snapshots, recorder, verifier, podCredentials)
	imagegatewebhook.SetupWorkloadWebhookWithManager(mgr, snapshots, o.checkWorkloads, recorder)
	imagegatewebhook.SetupExceptionWebhookWithManager(mgr)
	// The policy webhook refuses CEL conditions that do not compile, and, with the preflight
	// on, warns of the running Pods a change would refuse.
	imagegatewebhook.SetupPreflightWebhookWithManager(mgr, &imagegatewebhook.Preflight{
		Cache: mgr.GetCache(), Pods: pods, Client: mgr.GetClient(), Known: verifier.Known(), Excluded: excluded, Warn: o.preflight,
		Trust: verify.Compiler(verify.NamespaceSources{Reader: mgr.GetCache(), Namespace: o.namespace, Remote: remote}),
	})
	if o.imageReview {
		imagegatewebhook.SetupImageReviewWithManager(mgr, snapshots, excluded, recorder, verifier)
	}
	if o.pinScope != "" {
		clientset, err := kubernetes.NewForConfig(mgr.GetConfig())
		must(log, err, "making the client of the pinning webhook's configuration")
		must(log, mgr.Add(&controller.PinScopeSyncer{Client: clientset, Store: snapshots, Configuration: o.pinScope}), "adding the pinning webhook's scope")
	}
	if o.validatingConfiguration != "" {
		clientset, err := kubernetes.NewForConfig(mgr.GetConfig())
		must(log, err, "making the client of the admission policies")
		must(log, mgr.Add(&controller.AdmissionPolicySyncer{
			Client: clientset, Store: snapshots, Enabled: o.admissionPolicies, Configuration: o.validatingConfiguration, Excluded: excluded,
		}), "adding the admission policies")
	} else if o.admissionPolicies {
		must(log, errors.New("--admission-policies needs --validating-webhook-configuration"), "reading the flags")
	}
	var auditor *controller.Auditor
	if o.auditInterval > 0 {
		auditor = &controller.Auditor{
			Client: mgr.GetClient(), Cache: mgr.GetCache(), Pods: pods, Snapshots: snapshots,
			Interval: o.auditInterval, Excluded: excluded, Metrics: metrics,
			Verifier: verifier, Events: recorder.Events,
		}
		if o.reports {
			must(log, metrics.RegisterReports(ctrlmetrics.Registry), "registering the report metrics")
			auditor.Reports = &controller.Reporter{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Metrics: metrics}
		}
		must(log, mgr.Add(auditor), "adding the audit")
	}

	// Start the Namespace informer (metadata only) with the manager, so the first Pod request
	// does not wait for it.
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	ctx, draining := drainOnSignal(log, o.drain)
	namespaces, err := mgr.GetCache().GetInformer(ctx, ns)
	must(log, err, "watching Namespaces")
	if auditor != nil {
		must(log, auditor.WatchNamespaces(namespaces), "auditing after Namespace label changes")
	}
	nodes, err := mgr.GetCache().GetInformer(ctx, controller.NodeMetadata())
	must(log, err, "watching Nodes")
	must(log, nodePlatforms.Watch(nodes), "following the nodes' platforms")

	must(log, mgr.AddHealthzCheck("healthz", healthz.Ping), "adding the health check")
	must(log, mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()), "adding the webhook readiness check")
	must(log, mgr.AddReadyzCheck("policies", reconciler.ReadyCheck), "adding the policy readiness check")
	must(log, mgr.AddReadyzCheck("certificate", certificateCheck(log, certWatcher)), "adding the certificate readiness check")
	must(log, mgr.AddReadyzCheck("shutdown", func(*http.Request) error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		return nil
	}), "adding the shutdown readiness check")

	log.Info("Starting manager", "version", imagegateversion.Of(version), "webhookPort", o.webhookPort, "certDir", o.certDir)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

// drainOnSignal returns the manager's context. On SIGTERM or SIGINT it sets draining (the
// readiness probe then fails, and the Pod leaves the Service's endpoints) and cancels the
// context only after drain, so that requests already routed here are still answered; the
// webhook server then finishes in-flight requests and closes keep-alive connections. A second
// signal exits at once.
func drainOnSignal(log logr.Logger, drain time.Duration) (context.Context, *atomic.Bool) {
	ctx, cancel := context.WithCancel(context.Background())
	draining := &atomic.Bool{}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		draining.Store(true)
		log.Info("Shutting down: readiness fails now, serving until the drain period ends", "signal", sig.String(), "drain", drain.String())
		select {
		case <-time.After(drain):
		case <-signals:
			log.Info("Second signal: exiting now")
			os.Exit(1)
		}
		cancel()
		<-signals
		os.Exit(1)
	}()
	return ctx, draining
}

// certificateCheck fails readiness while the serving certificate is expired or not yet
// valid, with a log line when that starts; certwatcher keeps serving the last good pair when
// the files hold a broken one, and logs it.
func certificateCheck(log logr.Logger, w *certwatcher.CertWatcher) healthz.Checker {
	var failing atomic.Bool
	return func(*http.Request) error {
		cert, err := w.GetCertificate(nil)
		if err == nil && (cert == nil || cert.Leaf == nil) {
			err = errors.New("no serving certificate loaded")
		}
		if err == nil {
			now := time.Now()
			switch {
			case now.After(cert.Leaf.NotAfter):
				err = fmt.Errorf("the serving certificate expired at %s", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
			case now.Before(cert.Leaf.NotBefore):
				err = fmt.Errorf("the serving certificate is not valid before %s", cert.Leaf.NotBefore.UTC().Format(time.RFC3339))
			}
		}
		if err != nil && !failing.Swap(true) {
			log.Error(err, "Serving certificate unusable: readiness fails until it is replaced")
		} else if err == nil && failing.Swap(false) {
			log.Info("Serving certificate usable again")
		}
		return err
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

// envOr is the environment variable key, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
