// Package setupenvtest tests hack/setup-envtest.sh's download path against a local HTTP server
// that serves what the real ones serve (controller-tools' envtest index and archive, and a
// Kubernetes release binary with its .sha256), and its quick fall back to the build where
// nothing can be downloaded. ENVTEST_BUILD=never stands in for the 10-minute build: the
// script stops where it would start it, and says so.
package setupenvtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var script, _ = filepath.Abs("../../hack/setup-envtest.sh")

// k8sVersion is the version the script pins (hack/envtest/kubernetes/go.mod).
func k8sVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../hack/envtest/kubernetes/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "require k8s.io/kubernetes v"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("hack/envtest/kubernetes/go.mod pins no k8s.io/kubernetes")
	return ""
}

func fakeBinary(name string) []byte {
	return []byte("#!/bin/sh\necho fake " + name + "\n")
}

// release serves an envtest index, its archive and kube-controller-manager, counting requests.
type release struct {
	version  string
	kcmSHA   string // served as the .sha256; empty: the binary's own
	mu       sync.Mutex
	requests map[string]int
}

func (r *release) serve(t *testing.T) *httptest.Server {
	t.Helper()
	var archive bytes.Buffer
	gz := gzip.NewWriter(&archive)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		body := fakeBinary(name)
		if err := tw.WriteHeader(&tar.Header{Name: "controller-tools/envtest/" + name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	sum512 := sha512.Sum512(archive.Bytes())
	kcm := fakeBinary("kube-controller-manager")
	sum256 := sha256.Sum256(kcm)
	if r.kcmSHA == "" {
		r.kcmSHA = hex.EncodeToString(sum256[:])
	}
	r.requests = map[string]int{}
	archiveName := fmt.Sprintf("envtest-v%s-%s-%s.tar.gz", r.version, runtime.GOOS, runtime.GOARCH)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.URL.Path]++
		r.mu.Unlock()
		kcmPath := fmt.Sprintf("/release/v%s/bin/%s/%s/kube-controller-manager", r.version, runtime.GOOS, runtime.GOARCH)
		switch req.URL.Path {
		case "/envtest-releases.yaml":
			_, _ = fmt.Fprintf(w, "releases:\n  v%s:\n    %s:\n      hash: %s\n      selfLink: %s/archives/%s\n",
				r.version, archiveName, hex.EncodeToString(sum512[:]), "http://"+req.Host, archiveName)
		case "/archives/" + archiveName:
			_, _ = w.Write(archive.Bytes())
		case kcmPath:
			_, _ = w.Write(kcm)
		case kcmPath + ".sha256":
			_, _ = w.Write([]byte(r.kcmSHA))
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// served is how many requests asked for path, and for anything.
func (r *release) served(path string) (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	for _, n := range r.requests {
		total += n
	}
	return r.requests[path], total
}

// runScript runs hack/setup-envtest.sh with a bin folder of its own and env added; it returns
// standard output, standard error, the exit code and the time taken.
func runScript(t *testing.T, bin string, env ...string) (stdout, stderr string, code int, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, "--with-controller-manager")
	cmd.Env = append(os.Environ(), "KUBEBUILDER_ASSETS=", "LOCALBIN="+bin, "ENVTEST_BUILD=never")
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("setup-envtest.sh hung (%s); stderr:\n%s", took, errOut.String())
	}
	code = cmd.ProcessState.ExitCode()
	if err != nil && code <= 0 {
		t.Fatalf("setup-envtest.sh: %v", err)
	}
	t.Logf("setup-envtest.sh took %s, exit %d; stderr:\n%s", took.Round(time.Millisecond), code, errOut.String())
	return out.String(), errOut.String(), code, took
}

func TestDownloadsTheEnvtestReleaseAndKubeControllerManager(t *testing.T) {
	r := &release{version: k8sVersion(t)}
	srv := r.serve(t)
	bin := t.TempDir()
	stdout, stderr, code, _ := runScript(t, bin, "ENVTEST_INDEX_URL="+srv.URL+"/envtest-releases.yaml", "K8S_RELEASE_URL="+srv.URL+"/release")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	dest := filepath.Join(bin, "k8s", r.version)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if last := lines[len(lines)-1]; last != dest {
		t.Errorf("last line %q, want %q (KUBEBUILDER_ASSETS)", last, dest)
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl", "kube-controller-manager"} {
		out, err := exec.Command(filepath.Join(dest, name)).Output()
		if err != nil || string(out) != "fake "+name+"\n" {
			t.Errorf("%s: %q, %v; want the served binary, executable", name, out, err)
		}
	}
	if !strings.Contains(stderr, "downloaded kube-apiserver etcd kubectl") || !strings.Contains(stderr, "downloaded kube-controller-manager") {
		t.Error("the log does not say what was downloaded")
	}
	// A second run uses the cache and asks nothing of the network.
	before, _ := r.served("/envtest-releases.yaml")
	if stdout, _, code, _ := runScript(t, bin, "ENVTEST_INDEX_URL="+srv.URL+"/envtest-releases.yaml", "K8S_RELEASE_URL="+srv.URL+"/release"); code != 0 || strings.TrimSpace(stdout) != dest {
		t.Errorf("second run: exit %d, %q", code, stdout)
	}
	if after, _ := r.served("/envtest-releases.yaml"); after != before {
		t.Error("the second run fetched the index again instead of using bin/k8s")
	}
}

// A kube-controller-manager whose sha256 is not the published one is not used: the script
// goes on to build it (here: stops where it would), keeping the envtest binaries it got.
func TestRefusesAKubeControllerManagerWithTheWrongChecksum(t *testing.T) {
	r := &release{version: k8sVersion(t), kcmSHA: strings.Repeat("0", 64)}
	srv := r.serve(t)
	bin := t.TempDir()
	_, stderr, code, _ := runScript(t, bin, "ENVTEST_INDEX_URL="+srv.URL+"/envtest-releases.yaml", "K8S_RELEASE_URL="+srv.URL+"/release")
	if code != 3 || !strings.Contains(stderr, "not the published "+r.kcmSHA) || !strings.Contains(stderr, "kube-controller-manager is missing and ENVTEST_BUILD=never") {
		t.Errorf("exit %d; want 3, the checksum named and the build of kube-controller-manager next", code)
	}
	dest := filepath.Join(bin, "k8s", r.version)
	if _, err := os.Stat(filepath.Join(dest, "kube-controller-manager")); err == nil {
		t.Error("the binary with the wrong checksum was kept")
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dest, name)); err != nil {
			t.Errorf("%s: %v (downloaded before the failure, it should stay)", name, err)
		}
	}
}

// Where nothing can be downloaded (a refused connection, or a server that never answers) the
// script goes to the build after one bounded request, not after a long timeout.
func TestFallsBackToTheBuildWhenNothingDownloads(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + refused.Addr().String() + "/envtest-releases.yaml"
	_ = refused.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // accepted, never answered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		_ = silent.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	silentURL := "http://" + silent.Addr().String() + "/envtest-releases.yaml"

	for name, url := range map[string]string{"refused": refusedURL, "silent": silentURL} {
		t.Run(name, func(t *testing.T) {
			bin := t.TempDir()
			_, stderr, code, took := runScript(t, bin, "ENVTEST_INDEX_URL="+url, "ENVTEST_DOWNLOAD_TIMEOUT=2")
			if code != 3 || !strings.Contains(stderr, "no download ("+url) || !strings.Contains(stderr, "etcd is missing and ENVTEST_BUILD=never") {
				t.Errorf("exit %d; want 3, the failed download named, and the build next", code)
			}
			// The only wait is the one request, bounded by ENVTEST_DOWNLOAD_TIMEOUT.
			if took > time.Minute {
				t.Errorf("took %s to give up on the download", took)
			}
		})
	}
}

func TestDownloadNeverSkipsTheNetwork(t *testing.T) {
	r := &release{version: k8sVersion(t)}
	srv := r.serve(t)
	_, stderr, code, _ := runScript(t, t.TempDir(), "ENVTEST_INDEX_URL="+srv.URL+"/envtest-releases.yaml", "ENVTEST_DOWNLOAD=never")
	if code != 3 || !strings.Contains(stderr, "ENVTEST_DOWNLOAD=never") {
		t.Errorf("exit %d", code)
	}
	if _, total := r.served(""); total != 0 {
		t.Errorf("ENVTEST_DOWNLOAD=never still made %d requests", total)
	}
}
