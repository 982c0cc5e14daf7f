package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apiResult is one configuration's Pod creates through the apiserver.
type apiResult struct {
	Config  string
	Serial  stats  // dry-run creates one at a time
	DryRun  stats  // dry-run creates at -pod-concurrency
	Create  stats  // creates at -pod-concurrency
	Skipped string // why the configuration could not run here
}

// admissionConfig is one way to check images: set up, measured, torn down.
type admissionConfig struct {
	key      string // for -configs
	name     string
	enforces bool // refuses a disallowed Pod (all but the baseline and the no-op)
	setup    func(ctx context.Context, e *benchEnv) (teardown func() error, err error)
}

func (e *benchEnv) apiserverLayer(ctx context.Context) error {
	progress("layer 3: %d Pod creates and %d dry-run creates per configuration, %d at a time, through the apiserver", e.o.pods, e.o.pods, e.o.podConcurrency)
	for i, c := range e.configs() {
		res := apiResult{Config: c.name}
		var err error
		if res.Skipped, err = skipped(ctx, "apiserver", c.name, e.measureConfig(ctx, c, fmt.Sprintf("bench-%d", i), &res)); err != nil {
			return err
		}
		e.rep.API = append(e.rep.API, res)
	}
	return nil
}

const (
	settle = 5 * time.Second
	// serialFactor: the one-at-a-time run is cheap and its p50 is the headline, so it gets
	// more samples.
	serialFactor = 3
)

// skipError is a peer that cannot run here: reported, not fatal.
type skipError struct{ error }

// skipped sorts out what measuring the configuration name in layer returned: a skipError is
// the reason it could not run here (reported, not fatal); any other error, or the run being
// stopped, ends the layer.
func skipped(ctx context.Context, layer, name string, err error) (string, error) {
	if err == nil {
		return "", nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	var skip skipError
	if !errors.As(err, &skip) {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	progress("%s: %s could not run: %s", layer, name, skip.Error())
	return skip.Error(), nil
}

func (e *benchEnv) measureConfig(ctx context.Context, c admissionConfig, ns string, res *apiResult) error {
	if err := e.benchNamespace(ctx, ns); err != nil {
		return err
	}
	progress("apiserver: setting up %s", c.name)
	teardown, err := c.setup(ctx, e)
	if teardown != nil {
		defer func() {
			if err := teardown(); err != nil {
				progress("apiserver: tearing down %s: %v", c.name, err)
			}
		}()
	}
	if err != nil {
		return err
	}
	if err := e.probe(ctx, ns, c.enforces); err != nil {
		return err
	}
	// Let start-up work (informer lists, first audits, certificate and webhook controllers)
	// finish, the same for every configuration.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	pods := e.clientset.CoreV1().Pods(ns)
	create := func(dryRun bool) func(ctx context.Context, i int) error {
		opts := metav1.CreateOptions{}
		prefix := "pod"
		if dryRun {
			opts.DryRun, prefix = []string{metav1.DryRunAll}, "dry"
		}
		return func(ctx context.Context, i int) error {
			pod := benchPod(fmt.Sprintf("%s-%d", prefix, i), admittedImages...)
			_, err := pods.Create(ctx, pod, opts)
			return err
		}
	}
	// Warm up the path (connections, caches, the peer's first evaluations).
	if warm := run(ctx, 50, e.o.podConcurrency, time.Minute, create(true)); warm.Errors > 0 {
		return fmt.Errorf("warm-up: %s", warm.FirstError)
	}
	// One at a time, the latency a webhook adds; then under concurrency, the throughput.
	res.Serial = run(ctx, serialFactor*e.o.pods, 1, 3*time.Minute, create(true))
	res.DryRun = run(ctx, e.o.pods, e.o.podConcurrency, 3*time.Minute, create(true))
	res.Create = run(ctx, e.o.pods, e.o.podConcurrency, 3*time.Minute, create(false))
	for _, s := range []stats{res.Serial, res.DryRun, res.Create} {
		if s.Errors > 0 {
			return fmt.Errorf("%d of %d creates failed, first: %s", s.Errors, s.Requests, s.FirstError)
		}
	}
	progress("apiserver: %-32s serial dry-run p50 %.2f ms p99 %.2f ms; create p50 %.2f ms p99 %.2f ms %4.0f Pods/s",
		c.name, ms(res.Serial.P50), ms(res.Serial.P99), ms(res.Create.P50), ms(res.Create.P99), res.Create.PerSecond())
	return nil
}

// probe waits until the configuration is in force: a Pod with a disallowed image is refused
// (when it enforces) and an allowed one is admitted, both as dry-run creates.
func (e *benchEnv) probe(ctx context.Context, ns string, enforces bool) error {
	pods := e.clientset.CoreV1().Pods(ns)
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	deadline := time.Now().Add(3 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		last = func() error {
			_, err := pods.Create(ctx, benchPod("probe-good", admittedImages...), dry)
			if err != nil {
				return fmt.Errorf("an allowed Pod was refused: %w", err)
			}
			if !enforces {
				return nil
			}
			for _, images := range [][]string{foreignImages, latestImages} {
				_, err = pods.Create(ctx, benchPod("probe-bad", images...), dry)
				if err == nil {
					return fmt.Errorf("a Pod with %s was admitted", strings.Join(images, ", "))
				}
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("not in force after 3 minutes: %w", last)
}
