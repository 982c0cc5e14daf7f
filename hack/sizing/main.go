// Command sizing measures the manager's memory as the Pods it caches for the background audit
// grow: it starts a local control plane and bin/manager, records the manager's resident
// memory, creates N Pods (server-side only: there is no kubelet, and no webhook is registered,
// so this measures the cache, not admission), lets the audit run over them, and prints the
// resident memory again and the growth per 10,000 Pods. `make sizing` runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

func main() {
	var binDir, manager string
	var pods, namespaces int
	flag.StringVar(&binDir, "bin-dir", "", "Folder with etcd, kube-apiserver, kube-controller-manager and kubectl (make setup-envtest prints it).")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.IntVar(&pods, "pods", 10000, "How many Pods to create.")
	flag.IntVar(&namespaces, "namespaces", 10, "Over how many namespaces.")
	flag.Parse()
	if binDir == "" {
		fmt.Fprintln(os.Stderr, "sizing: --bin-dir is required (make sizing sets it)")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, binDir, manager, pods, namespaces)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sizing: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, binDir, manager string, pods, namespaces int) error {
	cluster, err := localcluster.Start(ctx, localcluster.Options{BinDir: binDir})
	if err != nil {
		return err
	}
	defer func() { _ = cluster.Stop() }()
	root, err := filepath.Abs(".")
	if err != nil {
		return err
	}
	if out, err := cluster.Kubectl("apply", "-f", filepath.Join(root, "config/crd/bases")).CombinedOutput(); err != nil {
		return fmt.Errorf("installing the CRDs: %w: %s", err, out)
	}
	if out, err := cluster.Kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s").CombinedOutput(); err != nil {
		return fmt.Errorf("waiting for the CRDs: %w: %s", err, out)
	}
	// A short audit interval, so that the audit lists the Pods (and its informer caches them)
	// soon after they exist.
	mgr, err := cluster.StartManager(ctx, localcluster.ManagerOptions{Binary: filepath.Join(root, manager), Args: []string{"--audit-interval=15s"}})
	if err != nil {
		return err
	}
	if out, err := cluster.Kubectl("apply", "-k", filepath.Join(root, "config/samples")).CombinedOutput(); err != nil {
		return fmt.Errorf("applying the samples: %w: %s", err, out)
	}
	settle := func() { time.Sleep(20 * time.Second) }
	settle()
	before, err := rss(mgr.Pid())
	if err != nil {
		return err
	}
	fmt.Printf("manager RSS with the sample policies and no Pods: %.1f MiB\n", mib(before))

	cfg, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 2000, 2000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sizing-%d", i)}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= pods || ctx.Err() != nil {
					return
				}
				if _, err := cs.CoreV1().Pods(fmt.Sprintf("sizing-%d", i%namespaces)).Create(ctx, realisticPod(i), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("creating Pods: %w", err)
	}
	created := time.Now()
	fmt.Printf("created %d Pods in %d namespaces in %s\n", pods, namespaces, created.Sub(start).Round(time.Second))
	settle()
	settle()
	after, err := rss(mgr.Pid())
	if err != nil {
		return err
	}
	scanned, err := cluster.Kubectl("get", "clusterimagepolicy", "trusted-registries", "-o=jsonpath={.status.audit.lastScanTime}").Output()
	if err != nil {
		return fmt.Errorf("reading the audit's last run: %w", err)
	}
	fmt.Printf("manager RSS after the audit cached them (last audit %s, Pods created by %s): %.1f MiB\n",
		scanned, created.UTC().Format(time.RFC3339), mib(after))
	fmt.Printf("growth: %.1f MiB for %d Pods, %.1f MiB per 10,000 Pods (Go %s, %s/%s)\n",
		mib(after-before), pods, mib(after-before)*10000/float64(pods), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// realisticPod is a Pod as a Deployment makes it: labels, annotations, two containers with
// resources, env and probes, a volume: the fields the cache transform drops, so that the
// measure says what it saves.
func realisticPod(i int) *corev1.Pod {
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}
	c := func(name, image string) corev1.Container {
		return corev1.Container{
			Name: name, Image: image,
			Env:            []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}, {Name: "REGION", Value: "eu-west-1"}},
			ReadinessProbe: probe, LivenessProbe: probe,
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("web-%05d", i),
			Labels:      map[string]string{"app": "web", "pod-template-hash": "7d9f8b6c5", "team": "payments"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-26T10:00:00Z", "prometheus.io/scrape": "true"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{c("app", "ghcr.io/acme/web:1.4.2"), c("proxy", "ghcr.io/acme/envoy:1.31")},
			Volumes:    []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
