package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// The Pod-watch layer: what a watch on every Pod costs each stored create, with no webhook
// in the way. The audit (leader only) reads Pods from an informer; every other replica has
// none. Each round starts one watcher at a time, in a shuffled order, waits until its cache
// is synced, runs the stored-create streams, reads the CPU time the apiserver and the
// watcher spent, and stops it.

const podWatchCommand = "pod-watcher"

// podWatchModes are the streams of each visit.
var podWatchModes = []ilvMode{
	{"one at a time, stored", 1, false, 20},
	{"8 at a time, stored", 8, false, 96},
}

// podWatchResult is one watcher's figures over every round.
type podWatchResult struct {
	Name string
	// Medians holds each round's median latency, by mode name.
	Medians map[string][]time.Duration
	Pooled  map[string]stats
	// APICPU and WatcherCPU are the CPU time of the apiserver and of the watching process (0
	// for no watcher) during the visits, over Creates stored creates. CPU time is counted in
	// ticks of 10 ms, so it is summed over every round.
	APICPU, WatcherCPU time.Duration
	Creates            int
	// RSS is the watcher's resident memory after its last visit.
	RSS int64
}

type podWatchReport struct {
	Rounds, Pods int
	Results      []podWatchResult
}

// podWatcher starts one kind of watcher and returns its pid and how to stop it; nil start:
// no watcher.
type podWatcher struct {
	name  string
	start func(ctx context.Context) (pid int, stop func() error, err error)
}

func (e *benchEnv) podWatchLayer(ctx context.Context) error {
	rounds := e.o.podWatchRounds
	progress("layer 6: the cost of a Pod watch on stored creates, %d rounds", rounds)
	if err := e.benchNamespace(ctx, "podwatch"); err != nil {
		return err
	}
	// The manager with the audit (the leader, whose audit lists Pods from its informer) and
	// without it (what every other replica runs). No webhook is registered: only the watch
	// differs.
	leader, err := e.cluster.StartManager(ctx, localcluster.ManagerOptions{Binary: filepath.Join(e.o.root, "bin", "manager")})
	if err != nil {
		return err
	}
	if err := leader.Stop(); err != nil {
		return err
	}
	follower, err := e.cluster.StartManager(ctx, localcluster.ManagerOptions{Binary: filepath.Join(e.o.root, "bin", "manager"), Args: []string{"--audit-interval=0"}})
	if err != nil {
		return err
	}
	if err := follower.Stop(); err != nil {
		return err
	}
	watchers := []podWatcher{
		{"no Pod watch", nil},
		{"imagegate, a replica without the audit (--audit-interval=0)", func(ctx context.Context) (int, func() error, error) {
			if err := follower.Start(ctx); err != nil {
				return 0, nil, err
			}
			return follower.Pid(), follower.Stop, nil
		}},
		{"imagegate, the leader (the audit's Pod informer, slim-Pod transform)", func(ctx context.Context) (int, func() error, error) {
			started := time.Now().Truncate(time.Second)
			if err := leader.Start(ctx); err != nil {
				return 0, nil, err
			}
			// The informer exists once the first audit has listed Pods and written its time.
			return leader.Pid(), leader.Stop, retry(ctx, time.Minute, func() error {
				out, err := e.cluster.Kubectl("get", "clusterimagepolicies", "-o", "jsonpath={.items[0].status.audit.lastScanTime}").Output()
				if err != nil {
					return err
				}
				t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(out)))
				if err != nil || t.Before(started) {
					return fmt.Errorf("the leader's first audit has not run yet (%q)", out)
				}
				return nil
			})
		}},
		{"client-go informer, full Pods with the same slim-Pod transform", e.startPodWatcher("slim")},
		{"client-go informer, metadata only", e.startPodWatcher("metadata")},
	}
	apiPid := e.cluster.Pid("kube-apiserver")
	rep := &podWatchReport{Rounds: rounds}
	results := make([]podWatchResult, len(watchers))
	for i, w := range watchers {
		results[i] = podWatchResult{Name: w.name, Medians: map[string][]time.Duration{}, Pooled: map[string]stats{}}
	}
	runs := map[int]map[string][]stats{}
	pods := e.clientset.CoreV1().Pods("podwatch")
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range rounds {
		for _, wi := range rng.Perm(len(watchers)) {
			w := watchers[wi]
			pid, stop := 0, func() error { return nil }
			if w.start != nil {
				var err error
				if pid, stop, err = w.start(ctx); err != nil {
					if stop != nil {
						err = errors.Join(err, stop())
					}
					return fmt.Errorf("%s: %w", w.name, err)
				}
			}
			// Let the start (the first list, the leader's first audit) settle.
			time.Sleep(2 * time.Second)
			apiBefore, err1 := readUsage(apiPid)
			var watcherBefore procUsage
			var err2 error
			if pid != 0 {
				watcherBefore, err2 = readUsage(pid)
			}
			if err := errors.Join(err1, err2); err != nil {
				return errors.Join(err, stop())
			}
			creates := 0
			for mi, m := range podWatchModes {
				s := run(ctx, m.PerRound, m.Concurrency, time.Minute, func(ctx context.Context, i int) error {
					_, err := pods.Create(ctx, benchPod(fmt.Sprintf("w%d-r%d-m%d-%d", wi, round, mi, i), admittedImages...), metav1.CreateOptions{})
					return err
				})
				if s.Errors > 0 {
					return errors.Join(fmt.Errorf("%s, %s: %d of %d creates failed, first: %s", w.name, m.Name, s.Errors, s.Requests, s.FirstError), stop())
				}
				creates += s.Requests
				if runs[wi] == nil {
					runs[wi] = map[string][]stats{}
				}
				runs[wi][m.Name] = append(runs[wi][m.Name], s)
				results[wi].Medians[m.Name] = append(results[wi].Medians[m.Name], s.P50)
			}
			// Let the watch deliver the last events before reading the CPU time.
			time.Sleep(500 * time.Millisecond)
			apiAfter, err1 := readUsage(apiPid)
			var watcherAfter procUsage
			if pid != 0 {
				watcherAfter, err2 = readUsage(pid)
			}
			if err := errors.Join(err1, err2); err != nil {
				return errors.Join(err, stop())
			}
			results[wi].APICPU += apiAfter.CPU - apiBefore.CPU
			results[wi].WatcherCPU += watcherAfter.CPU - watcherBefore.CPU
			results[wi].Creates += creates
			results[wi].RSS = watcherAfter.RSS
			rep.Pods += creates
			if err := stop(); err != nil {
				return fmt.Errorf("stopping %s: %w", w.name, err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if (round+1)%4 == 0 {
			progress("pod watch: %d of %d rounds", round+1, rounds)
		}
	}
	for wi := range results {
		for _, m := range podWatchModes {
			results[wi].Pooled[m.Name] = merge(runs[wi][m.Name]...)
		}
	}
	rep.Results = results
	e.rep.PodWatch = rep
	for _, r := range results[1:] {
		d := rep.added(r.Name, "8 at a time, stored")
		progress("pod watch: %-70s 8 at a time, stored: %+.3f ms (IQR %+.3f to %+.3f); apiserver %.2f ms CPU per create, watcher %.2f",
			r.Name, ms(d.median), ms(d.q1), ms(d.q3), ms(r.perCreate(r.APICPU)), ms(r.perCreate(r.WatcherCPU)))
	}
	return nil
}

// perCreate is cpu per stored create.
func (r *podWatchResult) perCreate(cpu time.Duration) time.Duration {
	if r.Creates == 0 {
		return 0
	}
	return cpu / time.Duration(r.Creates)
}

// added is, round by round, the watcher's median minus that with no watch (the first).
func (r *podWatchReport) added(name, mode string) spread {
	base := r.Results[0].Medians[mode]
	var this []time.Duration
	for _, res := range r.Results {
		if res.Name == name {
			this = res.Medians[mode]
		}
	}
	diffs := make([]time.Duration, min(len(base), len(this)))
	for i := range diffs {
		diffs[i] = this[i] - base[i]
	}
	return spreadOf(diffs)
}

// startPodWatcher runs `bench pod-watcher -mode mode` and waits for its synced cache.
func (e *benchEnv) startPodWatcher(mode string) func(context.Context) (int, func() error, error) {
	return func(ctx context.Context) (int, func() error, error) {
		self, err := os.Executable()
		if err != nil {
			return 0, nil, err
		}
		port, err := localcluster.FreePort()
		if err != nil {
			return 0, nil, err
		}
		p, err := e.cluster.Run("pod-watcher-"+mode, self, nil, podWatchCommand, "-mode="+mode, fmt.Sprintf("-port=%d", port))
		if err != nil {
			return 0, nil, err
		}
		if err := p.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), false); err != nil {
			return 0, p.Stop, err
		}
		return p.Pid(), p.Stop, nil
	}
}

// servePodWatcher is `bench pod-watcher`: an informer on every Pod (-mode slim: the full
// objects, cut by imagegate's slim-Pod transform; -mode metadata: PartialObjectMetadata),
// answering /readyz once its cache is synced.
func servePodWatcher(args []string) error {
	fs := flag.NewFlagSet(podWatchCommand, flag.ContinueOnError)
	mode := fs.String("mode", "slim", "slim or metadata.")
	port := fs.Int("port", 0, "Port of /readyz (127.0.0.1).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var informer cache.SharedIndexInformer
	switch *mode {
	case "slim":
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		informer = informers.NewSharedInformerFactory(cs, 0).Core().V1().Pods().Informer()
		if err := informer.SetTransform(podspec.Slim); err != nil {
			return err
		}
	case "metadata":
		mc, err := metadata.NewForConfig(cfg)
		if err != nil {
			return err
		}
		informer = metadatainformer.NewFilteredMetadataInformer(mc, corev1.SchemeGroupVersion.WithResource("pods"), metav1.NamespaceAll, 0,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil).Informer()
	default:
		return fmt.Errorf("-mode %q: want slim or metadata", *mode)
	}
	go informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return ctx.Err()
	}
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (r *report) writePodWatch(w func(string, ...any)) {
	pw := r.PodWatch
	if pw == nil {
		return
	}
	w("## 6. The cost of a Pod watch on stored creates\n\n")
	w("No webhook is registered here: only who watches Pods differs. imagegate's audit runs on\n")
	w("the leader only and reads Pods from an informer; the other replicas run no Pod watch at\n")
	w("all (the informer is created by the audit's first list). Each of %d rounds starts the\n", pw.Rounds)
	w("watchers below one at a time in a shuffled order, waits for its synced cache (for the\n")
	w("leader: its first audit), runs the stored-create streams (%d Pods in all, in one namespace),\n", pw.Pods)
	w("reads the CPU time that the kube-apiserver and the watcher spent, and stops it. The\n")
	w("two client-go informers compare the forms the audit could watch in identical processes:\n")
	w("full Pods cut by imagegate's transform (what the audit reads: images and the running\n")
	w("image IDs), and metadata only (which cannot serve the audit: it has no images).\n\n")
	w("| Watcher | 1 at a time: p50 | added: median [IQR] | 8 at a time: p50 | added: median [IQR] | apiserver CPU per create | watcher CPU per create | watcher RSS |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, res := range pw.Results {
		row := []string{res.Name}
		for _, m := range podWatchModes {
			row = append(row, fmt.Sprintf("%.2f ms", ms(res.Pooled[m.Name].P50)))
			if i == 0 {
				row = append(row, "")
				continue
			}
			d := pw.added(res.Name, m.Name)
			row = append(row, fmt.Sprintf("%+.3f ms [%+.3f, %+.3f]", ms(d.median), ms(d.q1), ms(d.q3)))
		}
		row = append(row, fmt.Sprintf("%.2f ms", ms(res.perCreate(res.APICPU))))
		if i == 0 {
			row = append(row, "", "")
		} else {
			row = append(row, fmt.Sprintf("%.3f ms", ms(res.perCreate(res.WatcherCPU))), fmt.Sprintf("%.1f MiB", mib(res.RSS)))
		}
		w("| %s |\n", strings.Join(row, " | "))
	}
	w("\nCPU per create is the CPU time spent during every visit, summed over the rounds, divided by\n")
	w("the creates of those visits (the kernel counts it in ticks of 10 ms, so it is summed, not\n")
	w("taken per round). It includes whatever else the process did in those seconds (the apiserver's own\n")
	w("housekeeping, the manager's leader election and reconciles). \"added\" is, round by round,\n")
	w("the watcher's median latency minus that with no Pod watch.\n\n")
}
