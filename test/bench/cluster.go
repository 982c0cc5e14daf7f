package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// runCluster starts the local control plane and runs the server and apiserver layers.
func runCluster(ctx context.Context, o *options, rep *report) error {
	if o.k8sBin == "" {
		return errors.New("-k8s-bin is required for the server and apiserver layers (make bench sets it)")
	}
	progress("starting etcd, kube-apiserver and kube-controller-manager")
	cluster, err := localcluster.Start(ctx, localcluster.Options{BinDir: o.k8sBin, Dir: o.clusterDir, Progress: progress})
	if err != nil {
		return err
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			progress("stopping the control plane: %v", err)
		}
	}()
	env := &benchEnv{o: o, cluster: cluster, rep: rep}
	defer func() {
		if env.sign != nil {
			env.sign.reg.Close()
		}
	}()
	if env.clientset, err = clientset(cluster.Kubeconfig); err != nil {
		return err
	}
	if err := env.kubectl(nil, "apply", "-f", filepath.Join(o.root, "config", "crd", "bases")); err != nil {
		return err
	}
	if err := env.kubectl(nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		return err
	}
	if err := env.applyPolicies(1); err != nil {
		return err
	}
	progress("starting the imagegate manager (bin/manager)")
	env.manager, err = cluster.StartManager(ctx, localcluster.ManagerOptions{Binary: filepath.Join(o.root, "bin", "manager")})
	if err != nil {
		return err
	}
	if o.has("server") {
		if err := env.serverLayer(ctx); err != nil {
			return err
		}
	}
	// Layer 3 starts the manager again only for its own configuration, so that its Pod
	// informer does not load the apiserver while the others are measured.
	if err := env.manager.Stop(); err != nil {
		return err
	}
	if o.has("apiserver") {
		if err := env.apiserverLayer(ctx); err != nil {
			return err
		}
	}
	// From here on, the namespaces of the signed images are the verify rule's alone. (Before,
	// the policies have no namespaceSelector: the server layer's reviews name a namespace
	// that does not exist.)
	env.spareSigned = true
	if err := env.applyPolicies(1); err != nil {
		return err
	}
	if o.has("interleaved") {
		if err := env.interleavedLayer(ctx); err != nil {
			return err
		}
	}
	if o.has("verify") {
		if err := env.verifyLayer(ctx); err != nil {
			return err
		}
	}
	if o.has("podwatch") {
		if err := env.applyPolicies(1); err != nil {
			return err
		}
		if err := env.podWatchLayer(ctx); err != nil {
			return err
		}
	}
	return nil
}

type benchEnv struct {
	o         *options
	cluster   *localcluster.Cluster
	clientset *kubernetes.Clientset
	manager   *localcluster.Manager
	rep       *report
	// sign is the registry of signed images and its key, made on first use.
	sign *signing
	// spareSigned makes applyPolicies leave the namespaces labelled signedLabel alone.
	spareSigned bool
	// selector, when set, is the one label the configuration being set up selects its
	// namespace by (the interleaved layer); nil: the bench namespaces (benchLabel).
	selector map[string]string
}

// namespaces is the label selector of the namespaces the configuration being set up covers.
func (e *benchEnv) namespaces() map[string]string {
	if e.selector != nil {
		return e.selector
	}
	return map[string]string{benchLabel: "true"}
}

func clientset(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	// The load is the point: no client-side throttling.
	cfg.QPS, cfg.Burst = 10000, 10000
	return kubernetes.NewForConfig(cfg)
}

// kubectl runs kubectl against the cluster with stdin, failing with its output.
func (e *benchEnv) kubectl(stdin []byte, args ...string) error {
	cmd := e.cluster.Kubectl(args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// applyPolicies makes the cluster hold exactly policies bench-0000 ... bench-(n-1).
func (e *benchEnv) applyPolicies(n int) error {
	if err := e.kubectl(nil, "delete", "clusterimagepolicies", "--all", "--wait=true"); err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, p := range imagegatePolicies(n) {
		if e.spareSigned {
			p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: signedLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
			}}
		}
		b, err := yaml.Marshal(p)
		if err != nil {
			return err
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return e.kubectl(buf.Bytes(), "apply", "--server-side", "-f", "-")
}

// serverLayer: load on the manager's webhook server and on the no-op server.
func (e *benchEnv) serverLayer(ctx context.Context) error {
	progress("layer 2: HTTPS load on the webhook servers (%d reviews per level)", e.o.serverRequests)
	noop, noopURL, err := e.startNoop(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = noop.Stop() }()
	body, err := reviewBody(admittedImages...)
	if err != nil {
		return err
	}
	igURL := fmt.Sprintf("https://127.0.0.1:%d/validate-v1-pod", e.manager.WebhookPort)
	if err := e.waitReviews(ctx, igURL, 1); err != nil {
		return err
	}
	targets := []target{
		{name: "no-op", pid: noop.Pid(), url: noopURL},
		{name: "imagegate", pid: e.manager.Pid(), url: igURL, policies: 1},
	}
	for _, c := range serverConcurrency {
		res, err := loadServers(ctx, targets, e.cluster.CA.CertPEM, body, c, e.o.serverRequests)
		if err != nil {
			return err
		}
		e.rep.Server = append(e.rep.Server, res...)
	}

	// Memory with 1,000 policies loaded, and the same load once more.
	progress("loading 1,000 ClusterImagePolicies")
	if err := e.applyPolicies(1000); err != nil {
		return err
	}
	if err := e.waitReviews(ctx, igURL, 1000); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	u, err := readUsage(e.manager.Pid())
	if err != nil {
		return err
	}
	e.rep.RSS1000 = u
	progress("manager with 1,000 policies: RSS %.1f MiB (peak %.1f MiB)", mib(u.RSS), mib(u.HWM))
	res, err := loadServers(ctx, []target{{name: "imagegate", pid: e.manager.Pid(), url: igURL, policies: 1000}}, e.cluster.CA.CertPEM, body, 8, e.o.serverRequests)
	if err != nil {
		return err
	}
	e.rep.Server = append(e.rep.Server, res...)
	return e.applyPolicies(1)
}

// waitReviews waits until the manager has loaded n policies: an image from registry-0.corp
// is refused by all of them but policy bench-0000, one message line each.
func (e *benchEnv) waitReviews(ctx context.Context, url string, n int) error {
	body, err := reviewBody("registry-0.corp/app:1", "quay.io/evil/miner:6.21")
	if err != nil {
		return err
	}
	client := reviewClient(e.cluster.CA.CertPEM, 1)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(3 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		// quay.io is refused by n policies; registry-0.corp by n-1.
		last = postReviewCount(ctx, client, url, body, 2*n-1)
		if last == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("the manager did not load %d policies within 3 minutes: %v", n, last)
}

// startNoop starts the no-op webhook (this program, as its own process) with a serving
// certificate from the cluster's CA.
func (e *benchEnv) startNoop(ctx context.Context) (*localcluster.Process, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	dir := filepath.Join(e.cluster.Dir, "noop-certs")
	if err := writeServing(e.cluster.CA, dir); err != nil {
		return nil, "", err
	}
	port, err := localcluster.FreePort()
	if err != nil {
		return nil, "", err
	}
	p, err := e.cluster.Run("noop-webhook", self, nil, noopCommand, fmt.Sprintf("-port=%d", port), "-cert-dir="+dir)
	if err != nil {
		return nil, "", err
	}
	if err := p.WaitHTTP(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), true); err != nil {
		return nil, "", err
	}
	return p, fmt.Sprintf("https://127.0.0.1:%d/validate-v1-pod", port), nil
}

// writeServing writes tls.crt, tls.key and ca.crt for 127.0.0.1 into dir.
func writeServing(ca *localcluster.CA, dir string) error {
	kp, err := ca.Serving("bench-webhook", []string{"localhost"}, loopback)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM, "ca.crt": ca.CertPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// benchNamespace creates a namespace the configurations' webhooks and policies select.
func (e *benchEnv) benchNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: "true"}}}
	_, err := e.clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

const benchLabel = "imagegate.io/bench"
