package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// ManagerOptions configures StartManager.
type ManagerOptions struct {
	// Binary is the manager, usually bin/manager.
	Binary string
	// DNSNames and IPs are added to the serving certificate, which always covers localhost
	// and 127.0.0.1.
	DNSNames []string
	IPs      []net.IP
	// Args are appended to the manager's flags.
	Args []string
	// WebhookPort is the webhook server's port; 0: a free one.
	WebhookPort int
}

// Manager is the imagegate manager running as its own process against the cluster, with a
// serving certificate from the cluster's CA.
type Manager struct {
	WebhookPort, MetricsPort, HealthPort int
	CertDir                              string

	cluster *Cluster
	name    string // of the log file
	binary  string
	args    []string
	proc    *process
}

// StartManager writes a serving certificate and starts the manager; it returns when the
// manager's /readyz answers 200 (its policy snapshot is built and the webhook serves).
func (c *Cluster) StartManager(ctx context.Context, opts ManagerOptions) (*Manager, error) {
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("manager binary: %w (run `make build`)", err)
	}
	c.managers++
	name := "manager"
	if c.managers > 1 {
		name = fmt.Sprintf("manager-%d", c.managers)
	}
	m := &Manager{cluster: c, name: name, binary: opts.Binary, CertDir: filepath.Join(c.Dir, name+"-certs"), WebhookPort: opts.WebhookPort}
	var err error
	for _, p := range []*int{&m.WebhookPort, &m.MetricsPort, &m.HealthPort} {
		if *p != 0 {
			continue
		}
		if *p, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(m.CertDir, 0o700); err != nil {
		return nil, err
	}
	serving, err := c.CA.Serving("imagegate-webhook",
		append([]string{"localhost"}, opts.DNSNames...),
		append([]net.IP{net.IPv4(127, 0, 0, 1)}, opts.IPs...))
	if err != nil {
		return nil, err
	}
	if err := m.WriteServingCert(serving); err != nil {
		return nil, err
	}
	m.args = append([]string{
		// Stopping should be quick here; the drain itself is tested with a longer one.
		"--shutdown-drain=500ms",
		"--webhook-cert-path=" + m.CertDir,
		"--webhook-port=" + strconv.Itoa(m.WebhookPort),
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(m.MetricsPort),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(m.HealthPort),
		// As installed: the pinning webhook's match condition follows the verify rules.
		"--pin-scope-configuration=" + PinWebhookConfiguration,
	}, opts.Args...)
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// WriteServingCert replaces the manager's serving certificate files (the manager reloads
// them).
func (m *Manager) WriteServingCert(kp KeyPair) error {
	for name, data := range map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM} {
		tmp := filepath.Join(m.CertDir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(m.CertDir, name)); err != nil {
			return err
		}
	}
	return nil
}

// Start starts (or restarts, after Stop or Kill) the manager process and waits until it is
// ready.
func (m *Manager) Start(ctx context.Context) error {
	if m.proc != nil {
		if ended, _ := m.proc.exited(); !ended {
			return errors.New("the manager is already running")
		}
	}
	p, err := startProcess(m.cluster.Dir, m.name, m.binary, m.args, []string{"KUBECONFIG=" + m.cluster.Kubeconfig})
	if err != nil {
		return err
	}
	m.proc = p
	m.cluster.procs = append(m.cluster.procs, p)
	return m.cluster.waitHTTP(ctx, p, m.HealthURL("/readyz"), false)
}

// Pid is the process id of the running manager.
func (m *Manager) Pid() int { return m.proc.cmd.Process.Pid }

// Stop stops the manager with SIGTERM, as a rolling update would.
func (m *Manager) Stop() error { return m.proc.stop(15 * time.Second) }

// Terminate sends SIGTERM and returns at once; Done is closed when the process has exited.
func (m *Manager) Terminate() error { return m.proc.cmd.Process.Signal(syscall.SIGTERM) }

// Done is closed when the manager process has exited.
func (m *Manager) Done() <-chan struct{} { return m.proc.done }

// Kill ends the manager with SIGKILL, as a crash would.
func (m *Manager) Kill() { m.proc.kill() }

// HealthURL is the manager's probe endpoint at path (/healthz, /readyz).
func (m *Manager) HealthURL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(m.HealthPort) + path
}

// MetricsURL is the manager's metrics endpoint (HTTPS, authenticated).
func (m *Manager) MetricsURL() string {
	return "https://127.0.0.1:" + strconv.Itoa(m.MetricsPort) + "/metrics"
}

// Log returns the manager's log so far.
func (m *Manager) Log() string {
	b, _ := os.ReadFile(m.proc.log)
	return string(b)
}

// PinWebhookConfiguration is the name of config/local's MutatingWebhookConfiguration.
const PinWebhookConfiguration = "imagegate-local-mutating-webhook-configuration"

// RenderWebhook renders config/local with kubectl kustomize and points its webhook
// configurations (validating and mutating) at this manager: the URL's port and the cluster CA as the
// caBundle. Nothing else is changed, so the shipped rules, scope and failure policy are what
// the apiserver gets.
func (m *Manager) RenderWebhook(repoRoot string) ([]byte, error) {
	out, err := m.cluster.Kubectl("kustomize", filepath.Join(repoRoot, "config", "local")).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize config/local: %w: %s", err, stderrOf(err))
	}
	docs, err := SplitYAML(out)
	if err != nil {
		return nil, err
	}
	var rendered [][]byte
	for _, doc := range docs {
		// The validating and the mutating configuration share the fields changed here.
		var cfg struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
			Webhooks          []map[string]any `json:"webhooks"`
		}
		if err := yaml.Unmarshal(doc, &cfg); err != nil {
			return nil, fmt.Errorf("config/local: %w", err)
		}
		if cfg.Kind != "ValidatingWebhookConfiguration" && cfg.Kind != "MutatingWebhookConfiguration" {
			return nil, fmt.Errorf("config/local renders a %s; it should render only webhook configurations", cfg.Kind)
		}
		for _, wh := range cfg.Webhooks {
			cc, _ := wh["clientConfig"].(map[string]any)
			raw, _ := cc["url"].(string)
			if raw == "" {
				return nil, fmt.Errorf("config/local: webhook %v has no url", wh["name"])
			}
			u, err := url.Parse(raw)
			if err != nil {
				return nil, fmt.Errorf("config/local: webhook %v: %w", wh["name"], err)
			}
			u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(m.WebhookPort))
			cc["url"] = u.String()
			cc["caBundle"] = m.cluster.CA.CertPEM
		}
		b, err := yaml.Marshal(&cfg)
		if err != nil {
			return nil, err
		}
		rendered = append(rendered, b)
	}
	if len(rendered) == 0 {
		return nil, errors.New("config/local renders no webhook configuration")
	}
	return bytes.Join(rendered, []byte("---\n")), nil
}

// RegisterWebhook applies RenderWebhook's output with kubectl.
func (m *Manager) RegisterWebhook(repoRoot string) error {
	manifest, err := m.RenderWebhook(repoRoot)
	if err != nil {
		return err
	}
	cmd := m.cluster.Kubectl("apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply of the webhook configuration: %w: %s", err, out)
	}
	return nil
}

// SplitYAML splits a multi-document YAML stream into its non-empty documents.
func SplitYAML(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) > 0 && strings.TrimSpace(string(doc)) != "---" {
			docs = append(docs, doc)
		}
	}
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}
