// Command sizing measures the manager's memory: it starts a local control plane and
// bin/manager and records the manager's resident memory; then, with --policies N, applies N
// ClusterImagePolicies at once (8 writers, as a GitOps sync would) and prints the peak
// resident memory during the burst, the memory once it settled and how many snapshots the
// manager compiled for it; then creates --pods Pods (server-side only: there is no kubelet,
// and no webhook is registered, so this measures the cache, not admission), lets the audit
// run over them, and prints the resident memory again and the growth per 10,000 Pods; then
// the CPU and the duration of audit passes while nothing changes, and the time from a new
// policy to its audit results over every Pod. `make sizing` runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/test/utils/localcluster"
	"github.com/imagegate/imagegate/test/utils/policygen"
)

func main() {
	var binDir, manager string
	var pods, namespaces, policies int
	var reports bool
	flag.StringVar(&binDir, "bin-dir", "", "Folder with etcd, kube-apiserver, kube-controller-manager and kubectl (make setup-envtest prints it).")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.IntVar(&pods, "pods", 10000, "How many Pods to create.")
	flag.IntVar(&namespaces, "namespaces", 10, "Over how many namespaces.")
	flag.IntVar(&policies, "policies", 0, "How many ClusterImagePolicies to apply in one burst first (0: none).")
	flag.BoolVar(&reports, "reports", false, "Run the manager with --reports (the Report CRD installed) and print how many Report writes each audit pass makes, before and after a policy change.")
	flag.Parse()
	if binDir == "" {
		fmt.Fprintln(os.Stderr, "sizing: --bin-dir is required (make sizing sets it)")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, binDir, manager, pods, namespaces, policies, reports)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sizing: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, binDir, manager string, pods, namespaces, policies int, reports bool) error {
	// The Pods name a ReplicaSet that does not exist, as a Deployment's Pods name theirs:
	// without the garbage collector, which would delete them.
	cluster, err := localcluster.Start(ctx, localcluster.Options{BinDir: binDir, Controllers: "*,-garbage-collector-controller"})
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
	args := []string{"--audit-interval=15s", "--zap-log-level=debug"}
	if reports {
		if out, err := cluster.Kubectl("apply", "-f", filepath.Join(root, "dist/chart/files/openreports")).CombinedOutput(); err != nil {
			return fmt.Errorf("installing the Report CRD: %w: %s", err, out)
		}
		args = append(args, "--reports")
	}
	if out, err := cluster.Kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s").CombinedOutput(); err != nil {
		return fmt.Errorf("waiting for the CRDs: %w: %s", err, out)
	}
	// A short audit interval, so that the audit lists the Pods (and its informer caches them)
	// soon after they exist.
	mgr, err := cluster.StartManager(ctx, localcluster.ManagerOptions{Binary: filepath.Join(root, manager), Args: args})
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
	if policies > 0 {
		if err := policyBurst(ctx, cfg, mgr, policies); err != nil {
			return err
		}
		if before, err = rss(mgr.Pid()); err != nil {
			return err
		}
	}
	if pods == 0 {
		return nil
	}
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
	if err := parallel(ctx, pods, func(i int) error {
		_, err := cs.CoreV1().Pods(fmt.Sprintf("sizing-%d", i%namespaces)).Create(ctx, realisticPod(i), metav1.CreateOptions{})
		return err
	}); err != nil {
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
	if peak, err := procStatus(mgr.Pid(), "VmHWM:"); err == nil {
		fmt.Printf("manager peak RSS so far (the Pods' initial list included): %.1f MiB\n", mib(peak))
	}
	if err := idlePasses(mgr); err != nil {
		return err
	}
	if reports {
		if err := reportWrites(cluster, mgr, namespaces); err != nil {
			return err
		}
	}
	return policyToResults(ctx, cluster, mgr, pods)
}

var audited = regexp.MustCompile(`"Audited".*?"pods":(\d+).*?"namespacesJudged":(\d+).*?"took":"?([^",}]+)`)

// idlePasses measures the audit while nothing changes: the manager's CPU over 60 s (four
// passes at the 15 s interval) and what each pass logged.
func idlePasses(mgr *localcluster.Manager) error {
	seen := len(audited.FindAllString(mgr.Log(), -1))
	cpu0, err := processCPU(mgr.Pid())
	if err != nil {
		return err
	}
	const window = 60 * time.Second
	time.Sleep(window)
	cpu, err := processCPU(mgr.Pid())
	if err != nil {
		return err
	}
	var passes []string
	for _, m := range audited.FindAllStringSubmatch(mgr.Log(), -1)[seen:] {
		passes = append(passes, fmt.Sprintf("%s Pods, %s namespaces judged, %s", m[1], m[2], m[3]))
	}
	fmt.Printf("nothing changing for %s: manager CPU %.2f s (%.1f%% of one core) for %d audit passes [%s]\n",
		window, (cpu - cpu0).Seconds(), 100*(cpu-cpu0).Seconds()/window.Seconds(), len(passes), strings.Join(passes, "; "))
	return nil
}

// policyToResults creates a ClusterImagePolicy in mode Audit that every Pod breaks, and
// prints the time until its status.audit counts them all, and the pass that found them.
func policyToResults(ctx context.Context, cluster *localcluster.Cluster, mgr *localcluster.Manager, pods int) error {
	const name = "sizing-change"
	policy := `{"apiVersion":"imagegate.io/v1alpha1","kind":"ClusterImagePolicy","metadata":{"name":"` + name + `"},` +
		`"spec":{"mode":"Audit","images":{"allow":["registry.example/only/**"]}}}`
	cmd := cluster.Kubectl("apply", "-f", "-")
	cmd.Stdin = strings.NewReader(policy)
	seen := len(audited.FindAllString(mgr.Log(), -1))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating a policy: %w: %s", err, out)
	}
	want := strconv.Itoa(pods)
	for {
		out, _ := cluster.Kubectl("get", "clusterimagepolicy", name, "-o=jsonpath={.status.audit.violations}").Output()
		if string(out) == want {
			break
		}
		if ctx.Err() != nil || time.Since(start) > 10*time.Minute {
			return fmt.Errorf("the audit never counted the %d Pods that break %s (last: %q)", pods, name, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	var passes []string
	for _, m := range audited.FindAllStringSubmatch(mgr.Log(), -1)[seen:] {
		passes = append(passes, fmt.Sprintf("%s Pods, %s namespaces judged, %s", m[1], m[2], m[3]))
	}
	fmt.Printf("a new policy that every Pod breaks: its status.audit counted all %d Pods %s after kubectl apply (the audit waits 2 s for edits to settle) [passes: %s]\n",
		pods, took.Round(100*time.Millisecond), strings.Join(passes, "; "))
	return nil
}

var reportsWritten = regexp.MustCompile(`"Reports written".*?"namespaces":(\d+),"writes":(\d+)`)

// reportWrites prints the Report writes of each audit pass so far, then changes a policy
// twice, and prints the writes of the passes after each change, with the CPU the
// kube-apiserver and etcd used meanwhile: first trusted-registries to mode Warn (the Pods all
// pass it, so no result changes), then its allow list to the in-house registry only (every
// Pod then fails it, so every namespace's Report changes once).
func reportWrites(cluster *localcluster.Cluster, mgr *localcluster.Manager, namespaces int) error {
	passes := func(log string) []string {
		var out []string
		for _, m := range reportsWritten.FindAllStringSubmatch(log, -1) {
			out = append(out, m[2])
		}
		return out
	}
	seen := passes(mgr.Log())
	fmt.Printf("Report writes per audit pass (%d namespaces), from the first: %s\n", namespaces, strings.Join(seen, ", "))
	window := func(what string, change func() error) error {
		cpu0 := controlPlaneCPU(cluster)
		if err := change(); err != nil {
			return err
		}
		time.Sleep(40 * time.Second)
		cpu := controlPlaneCPU(cluster) - cpu0
		all := passes(mgr.Log())
		fmt.Printf("Report writes per audit pass after %s: %s (kube-apiserver and etcd CPU in those 40 s: %.1f s)\n", what, strings.Join(all[len(seen):], ", "), cpu.Seconds())
		seen = all
		return nil
	}
	if err := window("nothing changed", func() error { return nil }); err != nil {
		return err
	}
	patch := func(p string) func() error {
		return func() error {
			if out, err := cluster.Kubectl("patch", "clusterimagepolicy", "trusted-registries", "--type=merge", "-p", p).CombinedOutput(); err != nil {
				return fmt.Errorf("changing a policy: %w: %s", err, out)
			}
			return nil
		}
	}
	if err := window("trusted-registries moved to mode Warn (no result changes)", patch(`{"spec":{"mode":"Warn"}}`)); err != nil {
		return err
	}
	if err := window("trusted-registries allows registry.corp:5000/** only (every Pod's result changes)", patch(`{"spec":{"images":{"allow":["registry.corp:5000/**"]}}}`)); err != nil {
		return err
	}
	var count int
	if out, err := cluster.Kubectl("get", "reports.openreports.io", "-A", "--no-headers").Output(); err == nil {
		count = strings.Count(string(out), "\n")
	}
	fmt.Printf("Reports in the cluster: %d\n", count)
	return nil
}

// controlPlaneCPU is the CPU time the kube-apiserver and etcd have used so far.
func controlPlaneCPU(cluster *localcluster.Cluster) time.Duration {
	var total time.Duration
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if cpu, err := processCPU(cluster.Pid(name)); err == nil {
			total += cpu
		}
	}
	return total
}

// processCPU is the CPU time a process has used so far.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command's closing parenthesis: utime and stime are the 12th and 13th,
	// in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond, nil
}

// realisticPod is a Pod as a Deployment makes it: labels, annotations, its ReplicaSet, two
// containers with env and probes, a volume: the fields the cache transform drops, so that the
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
			Name:        fmt.Sprintf("web-7d9f8b6c5-%06d", i),
			Labels:      map[string]string{"app": "web", "pod-template-hash": "7d9f8b6c5", "team": "payments"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-26T10:00:00Z", "prometheus.io/scrape": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8b6c5",
				UID: "3f6b1a52-2d0c-4c8e-9a7e-5b1f0c2d9e41", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{c("app", "ghcr.io/acme/web:1.4.2"), c("proxy", "ghcr.io/acme/envoy:1.31")},
			Volumes:    []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// policyBurst applies n ClusterImagePolicies with 8 writers, waits until the manager's
// snapshot holds them all, and prints the peak resident memory during the burst (VmHWM, which
// the kernel keeps), the memory after it, and the snapshots compiled for it.
func policyBurst(ctx context.Context, cfg *rest.Config, mgr *localcluster.Manager, n int) error {
	scheme := apiruntime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	peakBefore, err := procStatus(mgr.Pid(), "VmHWM:")
	if err != nil {
		return err
	}
	compilesBefore := strings.Count(mgr.Log(), `"Compiled policies"`)
	start := time.Now()
	if err := parallel(ctx, n, func(i int) error {
		// The set the engine's benchmarks evaluate (internal/policy), so the figures compare.
		p := policygen.Team("sizing", i)
		return c.Create(ctx, &p)
	}); err != nil {
		return fmt.Errorf("creating policies: %w", err)
	}
	applied := time.Since(start)
	// Compiles log how many ClusterImagePolicies they hold: wait for one with the whole burst
	// (and the samples).
	for !compiled(mgr.Log(), n) {
		if ctx.Err() != nil || time.Since(start) > 5*time.Minute {
			return fmt.Errorf("the manager never compiled a snapshot with the %d policies", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	loaded := time.Since(start)
	time.Sleep(20 * time.Second)
	peak, err := procStatus(mgr.Pid(), "VmHWM:")
	if err != nil {
		return err
	}
	now, err := rss(mgr.Pid())
	if err != nil {
		return err
	}
	compiles := strings.Count(mgr.Log(), `"Compiled policies"`) - compilesBefore
	fmt.Printf("applied %d ClusterImagePolicies in %s, all compiled %s after the first; %d snapshots compiled for them\n",
		n, applied.Round(time.Millisecond), loaded.Round(time.Millisecond), compiles)
	if peak > peakBefore {
		fmt.Printf("manager peak RSS during the burst: %.1f MiB; RSS 20 s after: %.1f MiB\n", mib(peak), mib(now))
	} else {
		fmt.Printf("manager peak RSS during the burst: no higher than before it (%.1f MiB); RSS 20 s after: %.1f MiB\n", mib(peakBefore), mib(now))
	}
	return nil
}

var compiledCount = regexp.MustCompile(`"Compiled policies".*?"clusterImagePolicies":(\d+)`)

// compiled reports whether a compile in log has held at least n ClusterImagePolicies.
func compiled(log string, n int) bool {
	for _, m := range compiledCount.FindAllStringSubmatch(log, -1) {
		if c, _ := strconv.Atoi(m[1]); c >= n {
			return true
		}
	}
	return false
}

// parallel calls do(i) for i in [0, n) on 8 goroutines; it returns the first error.
func parallel(ctx context.Context, n int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func rss(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

// procStatus reads a kB figure of /proc/<pid>/status, in bytes.
func procStatus(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s for process %d", key, pid)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
