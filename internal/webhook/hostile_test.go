package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// hostileServer is the manager's real webhook server (controller-runtime's, with its TLS and
// HTTP settings) serving the Pod, workload and ImageReview handlers on loopback.
type hostileServer struct {
	url    string
	client *http.Client
	addr   string
	tlsCfg *tls.Config
}

func startHostileServer(t *testing.T, deadline time.Duration) *hostileServer {
	t.Helper()
	ca, err := localcluster.NewCA("hostile-test")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Serving("webhook", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), kp.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), kp.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "trusted"},
		Spec:       imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}}},
	}}, nil)
	reader := fake.NewClientBuilder().WithScheme(scheme).Build()
	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}})
	srv.Register(PodWebhookPath, BoundRequest(&ctrlwebhook.Admission{Handler: NewPodValidator(fixedSnapshot{snap}, reader, nil)}, deadline))
	srv.Register(WorkloadWebhookPath, BoundRequest(&ctrlwebhook.Admission{Handler: NewWorkloadValidator(scheme, fixedSnapshot{snap}, reader, true, nil)}, deadline))
	srv.Register(ImageReviewPath, BoundRequest(NewImageReviewHandler(fixedSnapshot{snap}, reader, nil, nil), deadline))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	hs := &hostileServer{
		url: "https://127.0.0.1:" + strconv.Itoa(port), addr: "127.0.0.1:" + strconv.Itoa(port), tlsCfg: tlsCfg,
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}},
	}
	for i := 0; ; i++ {
		conn, err := tls.Dial("tcp", hs.addr, tlsCfg)
		if err == nil {
			_ = conn.Close()
			return hs
		}
		if i > 100 {
			t.Fatalf("webhook server did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// post sends body to path and returns the HTTP status and, for an AdmissionReview answer, the
// response's allowed flag, result code and message.
func (hs *hostileServer) post(t *testing.T, path, contentType string, body []byte) (status int, allowed bool, code int32, msg string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, hs.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hs.client.Do(req)
	if err != nil {
		t.Fatalf("request failed: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	var ar admissionv1.AdmissionReview
	if json.Unmarshal(out, &ar) == nil && ar.Response != nil {
		allowed = ar.Response.Allowed
		if ar.Response.Result != nil {
			code, msg = ar.Response.Result.Code, ar.Response.Result.Message
		}
		return resp.StatusCode, allowed, code, msg
	}
	return resp.StatusCode, false, 0, string(out)
}

// podReview builds an AdmissionReview around a raw object (and old object).
func podReview(op, resource, sub, uid string, object, old string) []byte {
	r := map[string]any{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]any{
			"uid": uid, "operation": op, "namespace": "team-a", "subResource": sub,
			"kind":     map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"resource": map[string]string{"group": "", "version": "v1", "resource": resource},
		},
	}
	req := r["request"].(map[string]any)
	if object != "" {
		req["object"] = json.RawMessage(object)
	}
	if old != "" {
		req["oldObject"] = json.RawMessage(old)
	}
	b, _ := json.Marshal(r)
	return b
}

func podJSON(images ...string) string {
	var cs []string
	for i, img := range images {
		quoted, _ := json.Marshal(img)
		cs = append(cs, fmt.Sprintf(`{"name":"c%d","image":%s}`, i, quoted))
	}
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"team-a"},"spec":{"containers":[` + strings.Join(cs, ",") + `]}}`
}

// TestHostileInput sends what a confused or malicious client could: every case must get a
// well-formed error (an AdmissionReview with a 4xx result, or an HTTP 4xx), never a panic,
// never an admission of a Pod with a disallowed or unreadable image.
func TestHostileInput(t *testing.T) {
	// The production deadline: a 5 MiB review takes a few seconds to decode under -race.
	hs := startHostileServer(t, RequestDeadline)
	many := make([]string, 5000)
	for i := range many {
		many[i] = "ghcr.io/acme/app:1"
	}
	manyBad := append([]string{}, many...)
	manyBad[4999] = "quay.io/evil/x:1"
	megabyteImage := "ghcr.io/acme/" + strings.Repeat("a", 1<<20)
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	workload := func(kind, group, obj string) []byte {
		return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"team-a",` +
			`"kind":{"group":"` + group + `","version":"v1","kind":"` + kind + `"},"resource":{"group":"` + group + `","version":"v1","resource":"x"},"object":` + obj + `}}`)
	}
	const (
		json_ = "application/json"
		// wantDeny: an AdmissionReview that does not admit (4xx error result or a denial).
		wantDeny = iota
		// wantAllow: a well-formed request for an allowed Pod.
		wantAllow
		// wantHTTP4xx: rejected at the HTTP level.
		wantHTTP4xx
	)
	cases := []struct {
		name, path, contentType string
		body                    []byte
		want                    int
		msg                     string
	}{
		{"empty body", PodWebhookPath, json_, nil, wantDeny, "request body is empty"},
		{"text/plain", PodWebhookPath, "text/plain", podReview("CREATE", "pods", "", "1", podJSON("nginx"), ""), wantDeny, "contentType=text/plain"},
		{"no content type", PodWebhookPath, "", podReview("CREATE", "pods", "", "1", podJSON("nginx"), ""), wantDeny, "expected application/json"},
		{"content type with charset", PodWebhookPath, "application/json; charset=utf-8", podReview("CREATE", "pods", "", "1", podJSON("quay.io/x/y:1"), ""), wantDeny, "expected application/json"},
		{"not JSON", PodWebhookPath, json_, []byte("hello"), wantDeny, ""},
		{"truncated JSON", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON("nginx"), "")[:120], wantDeny, ""},
		{"JSON null", PodWebhookPath, json_, []byte("null"), wantDeny, ""},
		{"JSON array", PodWebhookPath, json_, []byte("[1,2]"), wantDeny, ""},
		{"wrong apiVersion", PodWebhookPath, json_, bytes.Replace(podReview("CREATE", "pods", "", "1", podJSON("nginx"), ""), []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v9"), 1), wantDeny, ""},
		{"wrong kind", PodWebhookPath, json_, bytes.Replace(podReview("CREATE", "pods", "", "1", podJSON("nginx"), ""), []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"Pod"`), 1), wantDeny, ""},
		{"no request", PodWebhookPath, json_, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), wantDeny, "imagegate checks pods"},
		{"missing uid", PodWebhookPath, json_, podReview("CREATE", "pods", "", "", podJSON("quay.io/x/y:1"), ""), wantDeny, "no request.uid"},
		{"missing object", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", "", ""), wantDeny, "there is no content to decode"},
		{"object null", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", "null", ""), wantDeny, "decoding the Pod"},
		{"object is a string", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `"pod"`, ""), wantDeny, "decoding the Pod"},
		{"object is a Deployment", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":[{"name":"c","image":"quay.io/x/y:1"}]}}}}`, ""), wantDeny, "decoding the Pod"},
		{"image is a number", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":42}]}}`, ""), wantDeny, "decoding the Pod"},
		{"containers is an object", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":{"c":"x"}}}`, ""), wantDeny, "decoding the Pod"},
		{"deeply nested object", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":`+deep+`}}`, ""), wantDeny, ""},
		{"deeply nested review", PodWebhookPath, json_, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":` + deep + `}`), wantDeny, ""},
		{"duplicate image keys: the last one is the image, as for the apiserver", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"ghcr.io/acme/ok:1","image":"quay.io/evil/x:1"}]}}`, ""), wantDeny, `image "quay.io/evil/x:1"`},
		{"a capitalised Image key is not the image", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"quay.io/evil/x:1","Image":"ghcr.io/acme/ok:1"}]}}`, ""), wantDeny, `image "quay.io/evil/x:1"`},
		{"empty image", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON(""), ""), wantDeny, "not allowed"},
		{"image with a NUL byte", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/app\x00:1"), ""), wantDeny, "not allowed"},
		{"image with spaces", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/app :1"), ""), wantDeny, "not allowed"},
		{"image of a megabyte", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON(megabyteImage), ""), wantDeny, "not allowed"},
		{"five images of a megabyte", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON(megabyteImage, megabyteImage, megabyteImage, megabyteImage, megabyteImage), ""), wantDeny, "not allowed"},
		{"5,000 allowed containers", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON(many...), ""), wantAllow, ""},
		{"5,000 containers, the last one disallowed", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON(manyBad...), ""), wantDeny, "spec.containers[4999].image"},
		{"body just over 7 MiB", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/"+strings.Repeat("a", 7<<20)), ""), wantDeny, "request entity is too large"},
		{"DELETE", PodWebhookPath, json_, podReview("DELETE", "pods", "", "1", podJSON("nginx"), ""), wantDeny, "not DELETE"},
		{"CONNECT", PodWebhookPath, json_, podReview("CONNECT", "pods", "", "1", podJSON("nginx"), ""), wantDeny, "not CONNECT"},
		{"another resource", PodWebhookPath, json_, podReview("CREATE", "secrets", "", "1", podJSON("nginx"), ""), wantDeny, "not secrets"},
		{"status subresource", PodWebhookPath, json_, podReview("UPDATE", "pods", "status", "1", podJSON("nginx"), podJSON("nginx")), wantDeny, "not pods/status"},
		{"UPDATE without oldObject", PodWebhookPath, json_, podReview("UPDATE", "pods", "", "1", podJSON("quay.io/x/y:1"), ""), wantDeny, "decoding the old Pod"},
		{"UPDATE with a garbage oldObject", PodWebhookPath, json_, podReview("UPDATE", "pods", "", "1", podJSON("quay.io/x/y:1"), `{"spec":7}`), wantDeny, "decoding the old Pod"},
		{"ephemeral container with a bad image", PodWebhookPath, json_, podReview("UPDATE", "pods", "ephemeralcontainers", "1",
			`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"ghcr.io/acme/app:1"}],"ephemeralContainers":[{"name":"d","image":"busybox"}]}}`,
			podJSON("ghcr.io/acme/app:1")), wantDeny, "spec.ephemeralContainers[0].image"},
		{"v1beta1 AdmissionReview is still decided", PodWebhookPath, json_, bytes.Replace(podReview("CREATE", "pods", "", "1", podJSON("quay.io/x/y:1"), ""), []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), wantDeny, "not allowed"},
		{"well-formed and allowed", PodWebhookPath, json_, podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/app:1"), ""), wantAllow, ""},
		{"workload: not JSON", WorkloadWebhookPath, json_, []byte("{"), wantDeny, ""},
		{"workload: a Pod where a Deployment is said", WorkloadWebhookPath, json_, workload("Deployment", "apps", podJSON("quay.io/x/y:1")), wantDeny, "decoding the Deployment"},
		{"workload: an unknown kind", WorkloadWebhookPath, json_, workload("Widget", "apps", `{}`), wantDeny, "not x"},
		{"workload: a template with a bad image", WorkloadWebhookPath, json_, workload("Deployment", "apps",
			`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":[{"name":"c","image":"quay.io/x/y:1"}]}}}}`), wantDeny, "spec.template.spec.containers[0].image"},
		{"imagereview: GET", ImageReviewPath, json_, nil, wantHTTP4xx, ""},
		{"imagereview: not JSON", ImageReviewPath, json_, []byte("nope"), wantHTTP4xx, "decoding the ImageReview"},
		{"imagereview: deeply nested", ImageReviewPath, json_, []byte(`{"spec":` + deep + `}`), wantHTTP4xx, "decoding the ImageReview"},
		{"imagereview: over 3 MiB", ImageReviewPath, json_, []byte(`{"spec":{"containers":[{"image":"` + strings.Repeat("a", 3<<20) + `"}]}}`), wantHTTP4xx, "larger than"},
		{"unknown path", "/validate-everything", json_, podReview("CREATE", "pods", "", "1", podJSON("nginx"), ""), wantHTTP4xx, ""},
	}
	if len(cases) < 40 {
		t.Fatalf("%d cases; the suite promises at least 40", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if tc.name == "imagereview: GET" {
				resp, err := hs.client.Get(hs.url + ImageReviewPath)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusMethodNotAllowed {
					t.Errorf("GET: %d", resp.StatusCode)
				}
				return
			}
			status, allowed, code, msg := hs.post(t, tc.path, tc.contentType, body)
			switch tc.want {
			case wantAllow:
				if status != http.StatusOK || !allowed {
					t.Errorf("want allowed; got HTTP %d, allowed=%v, code %d: %s", status, allowed, code, msg)
				}
			case wantDeny:
				if status != http.StatusOK || allowed {
					t.Errorf("want a refused AdmissionReview; got HTTP %d, allowed=%v, code %d: %.200s", status, allowed, code, msg)
				}
			case wantHTTP4xx:
				if status < 400 || status >= 500 {
					t.Errorf("want HTTP 4xx; got %d: %.200s", status, msg)
				}
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %.300q lacks %q", msg, tc.msg)
			}
		})
	}
}

// TestSlowClientIsCutOff: a client that sends headers and then trickles its body (slowloris)
// loses its connection at the request deadline instead of holding it forever.
func TestSlowClientIsCutOff(t *testing.T) {
	hs := startHostileServer(t, time.Second)
	conn, err := tls.Dial("tcp", hs.addr, hs.tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", PodWebhookPath); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		// Keep sending a byte a second; the server must stop reading and answer or close.
		for range 60 {
			if _, err := conn.Write([]byte(" ")); err != nil {
				closed <- err
				return
			}
			time.Sleep(time.Second)
		}
		closed <- nil
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			// controller-runtime answers a body it could not read with an error review.
			t.Logf("answered HTTP %d", resp.StatusCode)
		}
	}
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("the server kept reading a trickling body for a minute")
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the connection stayed open")
	}
}

// TestBadRequestsDoNotGrowMemory sends 10,000 bad requests and reports the process's resident
// memory before and after; it fails on growth that would mean a leak (over 150 MiB).
func TestBadRequestsDoNotGrowMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 requests")
	}
	hs := startHostileServer(t, 2*time.Second)
	bodies := [][]byte{
		[]byte("hello"),
		podReview("CREATE", "pods", "", "", podJSON("nginx"), ""),
		podReview("CREATE", "pods", "", "1", `{"spec":7}`, ""),
		podReview("CREATE", "pods", "", "1", podJSON("ghcr.io/acme/"+strings.Repeat("a", 64<<10)), ""),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":` + strings.Repeat("[", 5000) + `}`),
	}
	before := rssKiB(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 10000; i += 8 {
				req, _ := http.NewRequest(http.MethodPost, hs.url+PodWebhookPath, bytes.NewReader(bodies[i%len(bodies)]))
				req.Header.Set("Content-Type", "application/json")
				resp, err := hs.client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	after := rssKiB(t)
	t.Logf("RSS before %d KiB, after 10,000 bad requests %d KiB (growth %d KiB)", before, after, after-before)
	if after-before > 150<<10 {
		t.Errorf("RSS grew by %d KiB", after-before)
	}
}

func rssKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return n
		}
	}
	t.Skip("no VmRSS")
	return 0
}
