//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// relPolicy is what the reliability specs decide with: the acme organization's registry only.
const relPolicy = `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-reliability
spec:
  images:
    allow: ["ghcr.io/acme/**"]
`

// applyRelPolicy applies relPolicy and waits until it is in force; it is deleted when the
// calling container ends.
func applyRelPolicy() {
	GinkgoHelper()
	r := apply(relPolicy)
	Expect(r.err).NotTo(HaveOccurred(), r.stderr)
	DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-reliability", "--ignore-not-found") })
	kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-reliability", "--timeout=60s")
}

// reviewBody is an AdmissionReview for the CREATE of a one-container Pod.
func reviewBody(uid, image string) []byte {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p" + uid, Namespace: "rel"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
	}
	raw, _ := json.Marshal(pod)
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(uid), Operation: admissionv1.Create, Namespace: "rel", Name: pod.Name,
			Kind:     metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Object:   runtime.RawExtension{Raw: raw},
		},
	}
	b, _ := json.Marshal(review)
	return b
}

// webhookClient talks to a manager's webhook port as the apiserver does: TLS trusting the
// cluster CA, keep-alive connections.
func webhookClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(cluster.CA.Cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 8,
	}}
}

// review posts one AdmissionReview and returns whether the Pod was allowed.
func review(client *http.Client, m *localcluster.Manager, uid, image string) (bool, error) {
	url := "https://127.0.0.1:" + strconv.Itoa(m.WebhookPort) + "/validate-v1-pod"
	resp, err := client.Post(url, "application/json", bytes.NewReader(reviewBody(uid, image)))
	if err != nil {
		return false, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil {
		return false, fmt.Errorf("bad response %q: %w", body, err)
	}
	if string(out.Response.UID) != uid {
		return false, fmt.Errorf("response for uid %q, sent %q", out.Response.UID, uid)
	}
	return out.Response.Allowed, nil
}

// createPod creates a one-container Pod through the apiserver and classifies the outcome:
// admitted, denied (by imagegate), webhook-error (the apiserver could not call imagegate),
// exists, or other with the error.
func createPod(ctx context.Context, cs kubernetes.Interface, namespace, name, image string) string {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
	}
	_, err := cs.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{})
	switch {
	case err == nil:
		return "admitted"
	case strings.Contains(err.Error(), `admission webhook "pods.imagegate.io" denied the request`):
		return "denied"
	case strings.Contains(err.Error(), `failed calling webhook "pods.imagegate.io"`),
		strings.Contains(err.Error(), `failed calling webhook "pin.pods.imagegate.io"`):
		return "webhook-error"
	case apierrors.IsAlreadyExists(err):
		return "exists"
	default:
		return "other: " + err.Error()
	}
}

// restConfig is the admin's client configuration for the suite's cluster.
func restConfig() *rest.Config {
	cfg, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

// servedSerial is the serial number of the certificate a new connection to the manager gets,
// verified against ca ("" when the handshake fails).
func servedSerial(ca *localcluster.CA, m *localcluster.Manager) string {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(m.WebhookPort), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		return ""
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func readyz(m *localcluster.Manager) int {
	resp, err := http.Get(m.HealthURL("/readyz"))
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

var _ = Describe("Reliability of a manager", Ordered, func() {
	var m *localcluster.Manager
	var client *http.Client

	BeforeAll(func(ctx SpecContext) {
		applyRelPolicy()
		// The reviews' namespace exists, so that policies selecting namespaces by label can
		// tell whether they cover it (they refuse when its labels are unknown).
		namespace("rel")
		// A second manager on the cluster, called directly (not registered with the apiserver).
		var err error
		m, err = cluster.StartManager(ctx, localcluster.ManagerOptions{
			Binary: filepath.Join(root, "bin", "manager"),
			Args:   []string{"--shutdown-drain=3s", "--audit-interval=0"},
		})
		Expect(err).NotTo(HaveOccurred())
		client = webhookClient()
		Eventually(func() (bool, error) { return review(client, m, "warmup", "quay.io/x/y:1") }).
			WithTimeout(30 * time.Second).Should(BeFalse())
	})

	It("rotates its serving certificate under load without failing a request", func() {
		var sent, failed, wrong atomic.Int64
		var firstErr atomic.Value
		stop := stream(4, func(w, i int) {
			uid := fmt.Sprintf("rot-%d-%d", w, i)
			image, want := "ghcr.io/acme/app:1", true
			if i%2 == 1 {
				image, want = "quay.io/evil/app:1", false
			}
			allowed, err := review(client, m, uid, image)
			sent.Add(1)
			switch {
			case err != nil:
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			case allowed != want:
				wrong.Add(1)
			}
		})
		var serials []string
		for range 3 {
			time.Sleep(700 * time.Millisecond)
			kp, err := cluster.CA.Serving("imagegate-webhook", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
			Expect(err).NotTo(HaveOccurred())
			Expect(m.WriteServingCert(kp)).To(Succeed())
			serials = append(serials, kp.Serial())
			// New connections get the new certificate.
			Eventually(func() string { return servedSerial(cluster.CA, m) }).WithTimeout(10 * time.Second).Should(Equal(kp.Serial()))
		}
		time.Sleep(500 * time.Millisecond)
		stop()
		AddReportEntry("certificate rotation under load", fmt.Sprintf("%d reviews, %d failed, %d wrong decisions, 3 rotations", sent.Load(), failed.Load(), wrong.Load()))
		Expect(failed.Load()).To(BeZero(), "first error: %v", firstErr.Load())
		Expect(wrong.Load()).To(BeZero())
		Expect(sent.Load()).To(BeNumerically(">", 100))
		Expect(serials).To(HaveLen(3))
	})

	It("fails readiness with a clear log line while its certificate is expired, and keeps a good one over a broken pair", func() {
		Expect(readyz(m)).To(Equal(http.StatusOK))
		expired, err := cluster.CA.ServingValid("imagegate-webhook", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)},
			time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
		Expect(err).NotTo(HaveOccurred())
		Expect(m.WriteServingCert(expired)).To(Succeed())
		Eventually(func() int { return readyz(m) }).WithTimeout(10 * time.Second).Should(Equal(http.StatusInternalServerError))
		Eventually(m.Log).WithTimeout(5 * time.Second).Should(ContainSubstring("the serving certificate expired at"))

		good, err := cluster.CA.Serving("imagegate-webhook", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		Expect(err).NotTo(HaveOccurred())
		Expect(m.WriteServingCert(good)).To(Succeed())
		Eventually(func() int { return readyz(m) }).WithTimeout(10 * time.Second).Should(Equal(http.StatusOK))

		// A certificate with another key's private key: certwatcher refuses it and keeps the
		// good pair, so the manager stays ready and serving.
		other, err := cluster.CA.Serving("imagegate-webhook", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		Expect(err).NotTo(HaveOccurred())
		Expect(m.WriteServingCert(localcluster.KeyPair{CertPEM: other.CertPEM, KeyPEM: good.KeyPEM})).To(Succeed())
		Consistently(func() int { return readyz(m) }).WithTimeout(2 * time.Second).Should(Equal(http.StatusOK))
		Expect(servedSerial(cluster.CA, m)).To(Equal(good.Serial()))
		Expect(m.WriteServingCert(good)).To(Succeed())
	})

	It("on SIGTERM fails readiness at once, serves through the drain period, then exits", func() {
		Expect(readyz(m)).To(Equal(http.StatusOK))
		Expect(m.Terminate()).To(Succeed())
		Eventually(func() int { return readyz(m) }).WithTimeout(2 * time.Second).Should(Equal(http.StatusInternalServerError))
		// Requests on kept-alive and on new connections are answered while draining; the first
		// one refused must be the end: the server closed at the end of the drain, and the
		// process exits right after.
		served := 0
		for i := 0; ; i++ {
			c := client
			if i%2 == 1 {
				c = webhookClient()
			}
			allowed, err := review(c, m, fmt.Sprintf("drain-%d", i), "ghcr.io/acme/app:1")
			if err != nil {
				Eventually(m.Done()).WithTimeout(30*time.Second).Should(BeClosed(), "refused (%v) but still running", err)
				break
			}
			Expect(allowed).To(BeTrue())
			served++
			time.Sleep(50 * time.Millisecond)
		}
		AddReportEntry("requests served while draining", served)
		Expect(served).To(BeNumerically(">", 10))
		Expect(m.Log()).To(ContainSubstring("Shutting down: readiness fails now"))
		_, err := review(webhookClient(), m, "after", "ghcr.io/acme/app:1")
		Expect(err).To(HaveOccurred(), "the server must be closed after the drain")
	})
})

var _ = Describe("Admission through the apiserver under faults", Ordered, func() {
	var cs *kubernetes.Clientset

	BeforeAll(func() {
		var err error
		cs, err = kubernetes.NewForConfig(restConfig())
		Expect(err).NotTo(HaveOccurred())
		applyRelPolicy()
		namespace("e2e-fault")
		Eventually(func() string {
			return run("run", "probe", "-n", "e2e-fault", "--image=quay.io/x/y:1", "--dry-run=server").stderr
		}).
			WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))
	})

	create := func(ctx context.Context, name, image string) string {
		return createPod(ctx, cs, "e2e-fault", name, image)
	}

	It("never admits a disallowed image while the manager is killed and restarted", func(ctx SpecContext) {
		counts := map[string]map[string]int{"allowed image": {}, "disallowed image": {}}
		killed := false
		DeferCleanup(func(ctx SpecContext) {
			if killed {
				Expect(manager.Start(ctx)).To(Succeed())
			}
		})
		for i := range 300 {
			if i == 60 {
				manager.Kill()
				killed = true
			}
			if killed && i == 120 {
				Expect(manager.Start(ctx)).To(Succeed())
				killed = false
			}
			kind, image := "allowed image", "ghcr.io/acme/app:1"
			if i%2 == 1 {
				kind, image = "disallowed image", "quay.io/evil/app:1"
			}
			counts[kind][create(ctx, fmt.Sprintf("f%d", i), image)]++
		}
		AddReportEntry("creates while the manager was killed and restarted", fmt.Sprint(counts))
		GinkgoWriter.Println(counts)
		Expect(counts["disallowed image"]).NotTo(HaveKey("admitted"), "a disallowed image was admitted")
		Expect(counts["disallowed image"]["denied"]).To(BeNumerically(">", 0))
		Expect(counts["disallowed image"]["webhook-error"]).To(BeNumerically(">", 0), "the kill should have been seen")
		for _, c := range counts {
			for outcome := range c {
				Expect(outcome).To(BeElementOf("admitted", "denied", "webhook-error"))
			}
		}
		Expect(counts["allowed image"]).NotTo(HaveKey("denied"))
		Expect(counts["allowed image"]["admitted"]).To(BeNumerically(">", 0))
	})

	It("keeps deciding while 1,000 policy changes arrive", func(ctx SpecContext) {
		r := runOn(cluster, []byte(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: flood
  namespace: e2e-fault
spec:
  images:
    deny: ["ghcr.io/acme/flood-0/*"]
`), "apply", "-f", "-")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		dyn := dynamic.NewForConfigOrDie(restConfig())
		gvr := schema.GroupVersionResource{Group: "imagegate.io", Version: "v1alpha1", Resource: "imagepolicies"}
		flood := make(chan error, 1)
		go func() {
			var err error
			for i := 1; i < 1000 && err == nil; i++ {
				patch := fmt.Sprintf(`{"spec":{"images":{"deny":["ghcr.io/acme/flood-%d/*"]}}}`, i)
				_, err = dyn.Resource(gvr).Namespace("e2e-fault").Patch(ctx, "flood", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			}
			flood <- err
		}()
		counts := map[string]int{}
		var slowest time.Duration
		done := false
		for i := 0; !done; i++ {
			select {
			case err := <-flood:
				Expect(err).NotTo(HaveOccurred())
				done = true
			default:
			}
			start := time.Now()
			image := "quay.io/evil/app:1"
			if i%2 == 0 {
				image = "ghcr.io/acme/app:1"
			}
			outcome := create(ctx, fmt.Sprintf("flood-%d", i), image)
			if d := time.Since(start); d > slowest {
				slowest = d
			}
			counts[image+" "+outcome]++
		}
		AddReportEntry("admissions during 1,000 policy changes", fmt.Sprintf("%v, slowest create %s", counts, slowest))
		for k := range counts {
			Expect(k).To(BeElementOf("ghcr.io/acme/app:1 admitted", "quay.io/evil/app:1 denied"))
		}
		Expect(kubectl("get", "imagepolicy", "flood", "-n", "e2e-fault", "-o=jsonpath={.spec.images.deny[0]}")).To(Equal("ghcr.io/acme/flood-999/*"))
		// The last change is in force: its pattern denies.
		Eventually(func() string { return create(ctx, "flood-last", "ghcr.io/acme/flood-999/x:1") }).
			WithTimeout(30 * time.Second).Should(Equal("denied"))
	})
})
