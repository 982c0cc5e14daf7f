//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// Three replicas behind config/default's webhook Service, as in a cluster: the apiserver calls
// the Service by its EndpointSlices (--enable-aggregator-routing), which list the replicas.
// EndpointSlices may not hold loopback addresses, so the replicas listen on this machine's
// non-loopback address, each on its own port (one slice per port). The test plays the
// EndpointSlice controller: a replica leaves the slices before it is stopped, as a terminating
// Pod does, and comes back once ready.
var _ = Describe("High availability", Ordered, func() {
	const (
		ns      = "imagegate-system"
		service = "imagegate-webhook-service"
		vwcName = "imagegate-validating-webhook-configuration"
	)
	var (
		replicas []*localcluster.Manager
		cs       *kubernetes.Clientset
	)

	setEndpoint := func(ctx context.Context, i int, ready bool) {
		GinkgoHelper()
		setReplicaEndpoint(ctx, cs, fmt.Sprintf("%s-replica-%d", service, i), replicas[i], ready)
	}

	BeforeAll(func(ctx SpecContext) {
		if hostIP == nil {
			Skip("this machine has no non-loopback IPv4 address for the EndpointSlices")
		}
		var err error
		cs, err = kubernetes.NewForConfig(restConfig())
		Expect(err).NotTo(HaveOccurred())
		applyRelPolicy()

		// config/default's Namespace, Service and webhook configuration; the CA is set here
		// (the cert-manager spec covers its injection).
		kubectl("delete", "validatingwebhookconfiguration", "imagegate-local-validating-webhook-configuration")
		DeferCleanup(func() {
			run("delete", "validatingwebhookconfiguration", vwcName, "--ignore-not-found")
			Expect(manager.RegisterWebhook(root)).To(Succeed())
		})
		for _, kind := range []string{"Namespace", "Service"} {
			for _, doc := range renderedOf(kind) {
				r := apply(doc)
				Expect(r.err).NotTo(HaveOccurred(), r.stderr)
			}
		}
		vwc := renderedOf("ValidatingWebhookConfiguration")
		Expect(vwc).To(HaveLen(1))
		withCA := strings.ReplaceAll(vwc[0], "    service:\n", "    caBundle: "+base64.StdEncoding.EncodeToString(cluster.CA.CertPEM)+"\n    service:\n")
		r := apply(withCA)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)

		for i := range 3 {
			m, err := cluster.StartManager(ctx, localcluster.ManagerOptions{
				Binary: filepath.Join(root, "bin", "manager"), DNSNames: certificateDNSNames(), IPs: []net.IP{hostIP},
				Args: []string{"--leader-elect", "--leader-election-namespace=" + ns, "--shutdown-drain=2s", "--audit-interval=1h"},
			})
			Expect(err).NotTo(HaveOccurred())
			replicas = append(replicas, m)
			setEndpoint(ctx, i, true)
		}
		DeferCleanup(func(ctx SpecContext) {
			for i, m := range replicas {
				_ = cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, fmt.Sprintf("%s-replica-%d", service, i), metav1.DeleteOptions{})
				_ = m.Stop()
			}
		})
		namespace("e2e-ha")
		Eventually(func() string {
			return run("run", "probe", "-n", "e2e-ha", "--image=quay.io/x/y:1", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))
	}, NodeTimeout(3*time.Minute))

	It("restarts the replicas one by one during a stream of Pod creates without a failed create", func(ctx SpecContext) {
		counts := map[string]int{}
		var mu sync.Mutex
		stop := stream(2, func(w, i int) {
			image, want := "ghcr.io/acme/app:1", "admitted"
			if i%2 == 1 {
				image, want = "quay.io/evil/app:1", "denied"
			}
			got := createPod(ctx, cs, "e2e-ha", fmt.Sprintf("ha-%d-%d", w, i), image)
			mu.Lock()
			if got == want {
				counts[want]++
			} else {
				counts[image+" -> "+got]++
			}
			mu.Unlock()
		})
		for i, m := range replicas {
			time.Sleep(time.Second)
			setEndpoint(ctx, i, false)
			time.Sleep(500 * time.Millisecond) // the apiserver's informer sees the slice change
			Expect(m.Stop()).To(Succeed())
			Expect(m.Start(ctx)).To(Succeed())
			setEndpoint(ctx, i, true)
		}
		time.Sleep(time.Second)
		stop()
		AddReportEntry("creates during a rolling restart of 3 replicas", fmt.Sprint(counts))
		Expect(counts).To(HaveLen(2), "every create got the right decision and none failed: %v", counts)
		Expect(counts["admitted"]).To(BeNumerically(">", 10))
		Expect(counts["denied"]).To(BeNumerically(">", 10))
	})

	It("elects one leader, which runs the audit, and elects another when it goes", func(ctx SpecContext) {
		holder := func() string {
			l, err := cs.CoordinationV1().Leases(ns).Get(ctx, "imagegate.imagegate.io", metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil {
				return ""
			}
			return *l.Spec.HolderIdentity
		}
		Eventually(holder).WithTimeout(30 * time.Second).ShouldNot(BeEmpty())
		first := holder()
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: ha-audit
  namespace: e2e-ha
spec:
  mode: Audit
  images:
    deny: ["ghcr.io/acme/app"]
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Eventually(func() string {
			return kubectl("get", "imagepolicy", "ha-audit", "-n", "e2e-ha", "-o=jsonpath={.status.audit.violations}")
		}).WithTimeout(30 * time.Second).ShouldNot(BeEmpty())

		// Stop the leader: another replica takes the lease (after it expires) and audits.
		Eventually(func() int {
			n := 0
			for _, m := range replicas {
				if leads(m) {
					n++
				}
			}
			return n
		}).WithTimeout(10*time.Second).Should(Equal(1), "exactly one replica leads")
		for i, m := range replicas {
			if leads(m) {
				setEndpoint(ctx, i, false)
				Expect(m.Stop()).To(Succeed())
				DeferCleanup(func(ctx SpecContext) {
					Expect(m.Start(ctx)).To(Succeed())
					setEndpoint(ctx, i, true)
				})
				break
			}
		}
		Eventually(holder).WithTimeout(time.Minute).ShouldNot(Equal(first))
		before := kubectl("get", "imagepolicy", "ha-audit", "-n", "e2e-ha", "-o=jsonpath={.status.audit.lastScanTime}")
		kubectl("patch", "imagepolicy", "ha-audit", "-n", "e2e-ha", "--type=merge", `-p={"spec":{"images":{"deny":["ghcr.io/acme/app","ghcr.io/acme/other"]}}}`)
		Eventually(func() string {
			return kubectl("get", "imagepolicy", "ha-audit", "-n", "e2e-ha", "-o=jsonpath={.status.audit.lastScanTime}")
		}).WithTimeout(30 * time.Second).ShouldNot(Equal(before))
	})
})

// leads reports whether a replica holds the lease since its latest start, from its log.
func leads(m *localcluster.Manager) bool {
	log := m.Log()
	if i := strings.LastIndex(log, "Starting manager"); i >= 0 {
		log = log[i:]
	}
	return strings.Contains(log, "Successfully acquired lease")
}

// setReplicaEndpoint plays the EndpointSlice controller for one replica of config/default's
// webhook Service: an EndpointSlice of its own (one port each) listing it ready or, before it
// stops, terminating.
func setReplicaEndpoint(ctx context.Context, cs kubernetes.Interface, name string, m *localcluster.Manager, ready bool) {
	GinkgoHelper()
	const ns, service = "imagegate-system", "imagegate-webhook-service"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: "e2e.imagegate.io"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(m.WebhookPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{hostIP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(!ready)},
		}},
	}
	existing, err := cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, slice.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	case err == nil:
		slice.ResourceVersion = existing.ResourceVersion
		_, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{})
	}
	Expect(err).NotTo(HaveOccurred())
}
