// Package localcluster runs a Kubernetes control plane on loopback from the binaries that
// hack/setup-envtest.sh builds (etcd, kube-apiserver, kube-controller-manager, kubectl), and
// the imagegate manager as its own process next to it, registered from config/local. The
// demo (hack/demo) and the end-to-end suite (test/e2e) share it.
//
// Pods are admitted and stored, and run nowhere until StartNode adds a node: kube-scheduler,
// and a kubelet with containerd and runc, so that Pods run (the demo) and a test can pull what
// was stored through the runtime's CRI image service (the e2e suite).
package localcluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Options configures Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kubectl.
	BinDir string
	// Dir is the working folder (certificates, kubeconfigs, etcd data, logs). Empty: a new
	// temporary folder, removed by Stop.
	Dir string
	// ExtraAPIServerArgs are appended to the apiserver's flags.
	ExtraAPIServerArgs []string
	// Controllers is the controller-manager's --controllers; empty: "*".
	Controllers string
	// CA signs the cluster's certificates; nil: a new one. Given, it lets files that the
	// apiserver reads at start (an admission configuration) trust a manager not yet started.
	CA *CA
	// Progress, when set, is told what is happening.
	Progress func(format string, args ...any)
}

// Cluster is a running local control plane.
type Cluster struct {
	Dir        string
	Kubeconfig string
	// Server is the apiserver's URL.
	Server string
	// CA signs every certificate of this cluster, the webhook's included.
	CA *CA

	binDir     string
	removeDir  bool
	progress   func(string, ...any)
	procs      []*process // in start order
	managers   int        // started by StartManager, for their log names
	adminCert  tls.Certificate
	httpClient *http.Client
}

// Start starts etcd, kube-apiserver and kube-controller-manager, and returns when the
// apiserver is ready and the controller-manager has created the default ServiceAccount.
// On error, whatever was started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make setup-envtest` first: %w", b, opts.BinDir, err)
		}
	}
	c := &Cluster{binDir: opts.BinDir, Dir: opts.Dir, progress: opts.Progress}
	if c.progress == nil {
		c.progress = func(string, ...any) {}
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "imagegate-cluster-"); err != nil {
			return nil, err
		}
		c.removeDir = true
	} else if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()

	if c.CA = opts.CA; c.CA == nil {
		if c.CA, err = NewCA("imagegate-local-ca"); err != nil {
			return nil, err
		}
	}
	caFile := filepath.Join(c.Dir, "ca.crt")
	if err := os.WriteFile(caFile, c.CA.CertPEM, 0o600); err != nil {
		return nil, err
	}

	etcdPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	c.progress("starting etcd on %s", etcdURL)
	etcd, err := c.start("etcd", filepath.Join(c.binDir, "etcd"),
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, etcd, etcdURL+"/health", false); err != nil {
		return nil, err
	}

	apiPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	c.Server = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	serving, err := c.CA.Serving("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)})
	if err != nil {
		return nil, err
	}
	servingCert, servingKey, err := serving.Write(c.Dir, "apiserver")
	if err != nil {
		return nil, err
	}
	saPub, saKey, err := serviceAccountKeys(c.Dir)
	if err != nil {
		return nil, err
	}
	admin, err := c.CA.Client("imagegate-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	if c.adminCert, err = tls.X509KeyPair(admin.CertPEM, admin.KeyPEM); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.CA.Cert)
	c.httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{c.adminCert}, MinVersion: tls.VersionTLS12},
	}}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Server, c.CA.CertPEM, admin); err != nil {
		return nil, err
	}

	c.progress("starting kube-apiserver on %s", c.Server)
	apiArgs := append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + c.Dir, "--tls-cert-file=" + servingCert, "--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + caFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC", "--allow-privileged=true",
		// The kubernetes Service cannot point at loopback; nothing here needs it to.
		"--endpoint-reconciler-type=none",
		"--v=1",
	}, opts.ExtraAPIServerArgs...)
	api, err := c.start("kube-apiserver", filepath.Join(c.binDir, "kube-apiserver"), apiArgs...)
	if err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, api, c.Server+"/readyz", true); err != nil {
		return nil, err
	}

	c.progress("starting kube-controller-manager")
	kcmConfig := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmConfig, c.Server, c.CA.CertPEM, admin); err != nil {
		return nil, err
	}
	kcm, err := c.start("kube-controller-manager", filepath.Join(c.binDir, "kube-controller-manager"),
		"--kubeconfig="+kcmConfig,
		"--authentication-kubeconfig="+kcmConfig, "--authorization-kubeconfig="+kcmConfig,
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--leader-elect=false",
		"--service-account-private-key-file="+saKey, "--root-ca-file="+caFile,
		"--controllers="+cmp.Or(opts.Controllers, "*"),
		"--v=1")
	if err != nil {
		return nil, err
	}
	// The ServiceAccount controller creates "default" in every namespace; Pods need it.
	if err := c.waitFor(ctx, kcm, "the controller-manager to create the default ServiceAccount", func() bool {
		return c.KubectlQuiet("get", "serviceaccount", "default", "-n", "default") == nil
	}); err != nil {
		return nil, err
	}
	c.progress("control plane ready; KUBECONFIG=%s", c.Kubeconfig)
	return c, nil
}

func (c *Cluster) start(name, binary string, args ...string) (*process, error) {
	p, err := startProcess(c.Dir, name, binary, args, nil)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// Stop stops every process in reverse start order and removes the working folder if Start
// created it. It can be called more than once.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		if err := c.procs[i].stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	c.procs = nil
	if c.removeDir && c.Dir != "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
		c.Dir = ""
	}
	return errors.Join(errs...)
}

// Kubectl returns kubectl with this cluster's kubeconfig.
func (c *Cluster) Kubectl(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.binDir, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	return cmd
}

// KubectlQuiet runs kubectl and returns an error holding its output if it fails.
func (c *Cluster) KubectlQuiet(args ...string) error {
	out, err := c.Kubectl(args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// waitHTTP polls url until it answers 200, the process exits, or a minute passes.
func (c *Cluster) waitHTTP(ctx context.Context, p *process, url string, useTLS bool) error {
	client := http.DefaultClient
	if useTLS {
		client = c.httpClient
	}
	return c.waitFor(ctx, p, p.name+" to answer "+url, func() bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitFor polls cond every 200ms for up to two minutes; it fails early, with the end of the
// process log, when the process exits.
func (c *Cluster) waitFor(ctx context.Context, p *process, what string, cond func() bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if cond() {
			return nil
		}
		if ended, err := p.exited(); ended {
			status := "exit status 0"
			if err != nil {
				status = err.Error()
			}
			return fmt.Errorf("%s exited (%s) while waiting for %s; end of %s:\n%s", p.name, status, what, p.log, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s; end of %s:\n%s", what, p.log, p.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func writeKubeconfig(path, server string, caPEM []byte, user KeyPair) error {
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: imagegate-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: imagegate-local
  context:
    cluster: imagegate-local
    user: admin
    namespace: default
current-context: imagegate-local
`, server, b64(caPEM), b64(user.CertPEM), b64(user.KeyPEM))
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// Run starts another program against the cluster (KUBECONFIG is set, and env added),
// logging to <Dir>/<name>.log; Stop stops it with the cluster, or its own Stop before.
func (c *Cluster) Run(name, binary string, env []string, args ...string) (*Process, error) {
	p, err := startProcess(c.Dir, name, binary, args, append([]string{"KUBECONFIG=" + c.Kubeconfig}, env...))
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return &Process{cluster: c, p: p}, nil
}

// Process is a program started by Run.
type Process struct {
	cluster *Cluster
	p       *process
}

// Pid is the process id.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// Stop sends SIGTERM and, after 15 seconds, SIGKILL.
func (p *Process) Stop() error { return p.p.stop(15 * time.Second) }

// Log returns the end of the process's log.
func (p *Process) Log() string { return p.p.tail() }

// WaitHTTP waits until url answers 200 (over TLS trusting only the cluster's CA when
// useTLS), failing early with the end of the log if the process exits.
func (p *Process) WaitHTTP(ctx context.Context, url string, useTLS bool) error {
	return p.cluster.waitHTTP(ctx, p.p, url, useTLS)
}

// Pid is the process id of the control plane's process name (etcd, kube-apiserver,
// kube-controller-manager), or 0 when it is not running.
func (c *Cluster) Pid(name string) int {
	for _, p := range c.procs {
		if p.name != name {
			continue
		}
		if ended, _ := p.exited(); ended {
			return 0
		}
		return p.cmd.Process.Pid
	}
	return 0
}
