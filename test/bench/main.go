// Command bench is `make bench`: it measures imagegate against the alternatives on this
// machine, in one run, and writes the report (docs/benchmarks.md) and its chart.
//
//	bench [-layers engine,server,apiserver] [-out docs/benchmarks.md]
//
// Layers: engine (imagegate's engine, OPA with Gatekeeper's Rego, cel-go with a VAP
// expression, in process); server (HTTPS load on the manager's webhook server and on a
// no-op webhook with the same server settings); apiserver (Pod creates through a local
// kube-apiserver with no webhook, a ValidatingAdmissionPolicy, a no-op webhook, imagegate,
// Gatekeeper and Kyverno, one after another); interleaved (no webhook, the
// ValidatingAdmissionPolicy, the no-op webhook and imagegate installed at once, each scoped
// to its namespace, visited in shuffled rounds); verify (signature verification, cold and
// warm, by imagegate and by Kyverno's verifyImages, on one registry); podwatch (what a watch
// on every Pod, the leader's audit informer, costs each stored create).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func main() {
	// `bench noop-webhook ...` is the no-op webhook server, run as its own process.
	if len(os.Args) > 1 && os.Args[1] == noopCommand {
		if err := serveNoop(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "noop-webhook:", err)
			os.Exit(1)
		}
		return
	}
	// `bench pod-watcher ...` is the Pod informer of the Pod-watch layer, run as its own process.
	if len(os.Args) > 1 && os.Args[1] == podWatchCommand {
		if err := servePodWatcher(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "pod-watcher:", err)
			os.Exit(1)
		}
		return
	}
	testing.Init()
	var o options
	flag.StringVar(&o.root, "root", "../..", "The imagegate repository.")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "The report to write, relative to -root.")
	flag.StringVar(&o.layers, "layers", "engine,server,apiserver,interleaved,verify,podwatch", "The layers to run.")
	flag.StringVar(&o.k8sBin, "k8s-bin", "", "The folder of kube-apiserver, etcd, kube-controller-manager and kubectl.")
	flag.StringVar(&o.gatekeeperDir, "gatekeeper-module", "", "The gatekeeper module's folder (its ConstraintTemplate and CRDs).")
	flag.StringVar(&o.kyvernoDir, "kyverno-module", "", "The kyverno module's folder (its CRDs).")
	flag.StringVar(&o.peersBin, "peers-bin", "bin/peers", "The folder of the gatekeeper and kyverno binaries, relative to -root.")
	flag.IntVar(&o.serverRequests, "server-requests", 20000, "Requests per concurrency level on the webhook servers.")
	flag.IntVar(&o.pods, "pods", 500, "Pods created (and as many dry-run creates) per configuration through the apiserver.")
	flag.IntVar(&o.podConcurrency, "pod-concurrency", 8, "Concurrent Pod creates.")
	flag.IntVar(&o.rounds, "rounds", 30, "Rounds of the interleaved layer.")
	flag.IntVar(&o.podWatchRounds, "podwatch-rounds", 6, "Rounds of the Pod-watch layer.")
	flag.StringVar(&o.configs, "configs", "", "Only these apiserver configurations (comma-separated: none,vap,noop,imagegate,gatekeeper,kyverno); all when empty.")
	flag.StringVar(&o.clusterDir, "cluster-dir", "", "Keep the control plane's files and every process log in this folder (default: a temporary folder, removed).")
	flag.StringVar(&o.command, "command", "make bench", "The command to print in the report.")
	flag.Parse()
	var err error
	if o.root, err = filepath.Abs(o.root); err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runAll(ctx, &o); err != nil {
		fail(err)
	}
}

type options struct {
	root, out, layers, k8sBin, gatekeeperDir, kyvernoDir, peersBin, command, configs, clusterDir string
	serverRequests, pods, podConcurrency, rounds, podWatchRounds                                 int
}

func (o *options) has(layer string) bool {
	for _, l := range strings.Split(o.layers, ",") {
		if strings.TrimSpace(l) == layer {
			return true
		}
	}
	return false
}

// started is when the harness started: progress lines carry the time since, so a run shows
// where its minutes went.
var started = time.Now()

func progress(format string, args ...any) {
	d := time.Since(started).Round(time.Second)
	fmt.Fprintf(os.Stderr, "bench: [%02d:%02d] "+format+"\n", append([]any{int(d.Minutes()), int(d.Seconds()) % 60}, args...)...)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func runAll(ctx context.Context, o *options) error {
	rep := &report{Started: time.Now(), Command: o.command}
	rep.describeMachine(o)
	if o.has("engine") {
		progress("layer 1: engines in process (about a minute)")
		res, tpl, err := runEngines(o.gatekeeperDir, progress)
		if err != nil {
			return err
		}
		rep.Engine, rep.RegoTemplate = res, tpl
	}
	if o.has("server") || o.has("apiserver") || o.has("interleaved") || o.has("verify") || o.has("podwatch") {
		if err := runCluster(ctx, o, rep); err != nil {
			return err
		}
	}
	rep.Took = time.Since(rep.Started)
	out := o.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(o.root, out)
	}
	return rep.write(out)
}
