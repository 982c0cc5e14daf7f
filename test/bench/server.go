package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	imagegatewebhook "github.com/imagegate/imagegate/internal/webhook"
)

const noopCommand = "noop-webhook"

// serveNoop serves a Pod webhook that admits everything, with the manager's server settings:
// controller-runtime's webhook server, TLS 1.2 or newer, HTTP/1.1 only, the certificate
// through certwatcher, and the same per-request deadline. It is the limit imagegate is
// measured against: the cost of being a webhook at all.
func serveNoop(args []string) error {
	fs := flag.NewFlagSet(noopCommand, flag.ContinueOnError)
	port := fs.Int("port", 0, "Port to serve on (127.0.0.1).")
	certDir := fs.String("cert-dir", "", "Folder of tls.crt and tls.key.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	watcher, err := certwatcher.New(filepath.Join(*certDir, "tls.crt"), filepath.Join(*certDir, "tls.key"))
	if err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: *port, TLSOpts: []func(*tls.Config){
		func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 },
		func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} },
		func(c *tls.Config) { c.GetCertificate = watcher.GetCertificate },
	}})
	allow := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })
	srv.Register(imagegatewebhook.PodWebhookPath, imagegatewebhook.BoundRequest(&webhook.Admission{Handler: allow}, imagegatewebhook.RequestDeadline))
	srv.Register("/healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { _ = watcher.Start(ctx) }()
	return srv.Start(ctx)
}

// reviewBody is a real AdmissionReview of a Pod CREATE, as the apiserver sends it.
func reviewBody(images ...string) ([]byte, error) {
	pod := benchPod("bench-pod", images...)
	pod.Namespace = "bench"
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0f4cb0e0-7d8e-4d6b-9a57-1c3c2f0d8c11",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Name:      pod.Name,
			Namespace: pod.Namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	return json.Marshal(review)
}

// reviewClient posts AdmissionReviews over HTTPS with keep-alive, trusting only caPEM.
func reviewClient(caPEM []byte, conns int) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
	}}
}

// post sends an AdmissionReview and returns the answer's body, or an error for a status
// other than 200.
func post(ctx context.Context, client *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return b, nil
}

// postReview sends body and checks that the answer says allowed (or not).
func postReview(ctx context.Context, client *http.Client, url string, body []byte, wantAllowed bool) error {
	b, err := post(ctx, client, url, body)
	if err != nil {
		return err
	}
	want := []byte(`"allowed":false`)
	if wantAllowed {
		want = []byte(`"allowed":true`)
	}
	if !bytes.Contains(b, want) {
		return fmt.Errorf("answer without %s: %.300s", want, b)
	}
	return nil
}

// serverResult is one load level against one server.
type serverResult struct {
	Server      string
	Policies    int
	Concurrency int
	Stats       stats
	CPUPerReq   time.Duration // server CPU time per review
	RSS         int64
}

var serverConcurrency = []int{1, 8, 32}

// target is one webhook server under load.
type target struct {
	name     string
	pid      int
	url      string
	policies int
}

// serverRounds is how many alternating rounds each concurrency level is split into, so that
// neither server always runs on a warmer (or busier) machine.
const serverRounds = 4

// loadServers measures the targets at one concurrency level: total requests each, in
// alternating rounds, after a warm-up.
func loadServers(ctx context.Context, targets []target, caPEM, body []byte, concurrency, total int) ([]serverResult, error) {
	client := reviewClient(caPEM, concurrency)
	defer client.CloseIdleConnections()
	post := func(url string) func(context.Context, int) error {
		return func(ctx context.Context, _ int) error { return postReview(ctx, client, url, body, true) }
	}
	runs := make([][]stats, len(targets))
	cpu := make([]time.Duration, len(targets))
	for _, t := range targets {
		// Warm up: connections, TLS sessions, caches.
		if warm := run(ctx, min(total/10, 1000), concurrency, 30*time.Second, post(t.url)); warm.Errors > 0 {
			return nil, fmt.Errorf("%s: warm-up failed: %s", t.name, warm.FirstError)
		}
	}
	for round := range serverRounds {
		for k := range targets {
			i := (k + round) % len(targets)
			before, err := readUsage(targets[i].pid)
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], run(ctx, total/serverRounds, concurrency, 60*time.Second, post(targets[i].url)))
			after, err := readUsage(targets[i].pid)
			if err != nil {
				return nil, err
			}
			cpu[i] += after.CPU - before.CPU
		}
	}
	var out []serverResult
	for i, t := range targets {
		s := merge(runs[i]...)
		u, err := readUsage(t.pid)
		if err != nil {
			return nil, err
		}
		r := serverResult{Server: t.name, Policies: t.policies, Concurrency: concurrency, Stats: s, RSS: u.RSS}
		if s.Requests > 0 {
			r.CPUPerReq = cpu[i] / time.Duration(s.Requests)
		}
		progress("server: %-10s %4d policies c=%-3d %8.0f reviews/s p50 %.2f ms p99 %.2f ms errors %d", t.name, t.policies, concurrency, s.PerSecond(), ms(s.P50), ms(s.P99), s.Errors)
		out = append(out, r)
	}
	return out, nil
}

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

// postReviewCount sends body and checks that the answer denies it with want message lines.
func postReviewCount(ctx context.Context, client *http.Client, url string, body []byte, want int) error {
	b, err := post(ctx, client, url, body)
	if err != nil {
		return err
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	if out.Response == nil || out.Response.Allowed || out.Response.Result == nil {
		return fmt.Errorf("not a denial: %+v", out.Response)
	}
	if got := violationCount(out.Response.Result.Message); got != want {
		return fmt.Errorf("%d violations, want %d", got, want)
	}
	return nil
}

var inAll = regexp.MustCompile(`\((\d+) in all, of \d+ polic`)

// violationCount is how many violations a denial names: one per line, or, when the message is
// capped (policy.MaxMessages lines and a count), the count it ends with.
func violationCount(message string) int {
	if m := inAll.FindStringSubmatch(message); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return strings.Count(message, "\n") + 1
}
