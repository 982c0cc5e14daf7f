package webhook

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/test/utils/envtestutil"
)

// metricValue reads one series of the suite's registry.
func metricValue(name string, labels map[string]string) float64 {
	GinkgoHelper()
	return envtestutil.MetricValue(metricsRegistry, name, labels)
}

var _ = Describe("Metrics", func() {
	It("count decisions by endpoint and result, violations by policy and mode, and time each decision", func() {
		ns := newNamespace(nil)
		trusted := clusterPolicy(ns, "trusted", allowAcme)
		warn := clusterPolicy(ns, "warn", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeWarn, Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}})
		dec := func(d string) map[string]string { return map[string]string{"endpoint": "pod", "decision": d} }
		viol := func(p *imagegatev1alpha1.ClusterImagePolicy, mode string) map[string]string {
			return map[string]string{"endpoint": "pod", "policy": "ClusterImagePolicy/" + p.Name, "mode": mode}
		}
		before := map[string]float64{
			"allowed": metricValue("imagegate_admission_decisions_total", dec("allowed")),
			"warned":  metricValue("imagegate_admission_decisions_total", dec("allowed-with-warnings")),
			"denied":  metricValue("imagegate_admission_decisions_total", dec("denied")),
			"timed":   metricValue("imagegate_evaluation_duration_seconds", map[string]string{"endpoint": "pod"}),
		}

		Expect(createErr(pod(ns, "ok", "ghcr.io/acme/app:1"))).To(BeEmpty())
		Expect(createErr(pod(ns, "warned", "ghcr.io/acme/app:latest"))).To(BeEmpty())
		Expect(createErr(pod(ns, "denied1", "quay.io/x/a:1", "quay.io/x/b:1"))).NotTo(BeEmpty())
		Expect(createErr(pod(ns, "denied2", "quay.io/x/c:1"))).NotTo(BeEmpty())

		Expect(metricValue("imagegate_admission_decisions_total", dec("allowed")) - before["allowed"]).To(Equal(1.0))
		Expect(metricValue("imagegate_admission_decisions_total", dec("allowed-with-warnings")) - before["warned"]).To(Equal(1.0))
		Expect(metricValue("imagegate_admission_decisions_total", dec("denied")) - before["denied"]).To(Equal(2.0))
		Expect(metricValue("imagegate_evaluation_duration_seconds", map[string]string{"endpoint": "pod"}) - before["timed"]).To(Equal(4.0))
		// Two requests broke trusted (one with two images: counted once per request).
		Expect(metricValue("imagegate_policy_violations_total", viol(trusted, "Enforce"))).To(Equal(2.0))
		Expect(metricValue("imagegate_policy_violations_total", viol(warn, "Warn"))).To(Equal(1.0))
		Expect(metricValue("imagegate_policy_snapshot_generation", nil)).To(BeNumerically(">=", 2))
		Expect(metricValue("imagegate_policies", map[string]string{"state": "ready"})).To(BeNumerically(">=", 2))
	})
})

var _ = Describe("Events", func() {
	It("records one Denied Event on the policy, not one per refused Pod", func() {
		ns := newNamespace(nil)
		p := clusterPolicy(ns, "trusted", allowAcme)
		for i := range 5 {
			Expect(createErr(pod(ns, fmt.Sprintf("bad%d", i), "quay.io/x/y:1"))).NotTo(BeEmpty())
		}
		list := func() []eventsv1.Event {
			var l eventsv1.EventList
			Expect(k8sClient.List(ctx, &l, client.InNamespace("default"))).To(Succeed())
			var out []eventsv1.Event
			for _, e := range l.Items {
				if e.Regarding.Name == p.Name && e.Regarding.Kind == "ClusterImagePolicy" {
					out = append(out, e)
				}
			}
			return out
		}
		Eventually(list).WithTimeout(10 * time.Second).Should(HaveLen(1))
		Consistently(list).WithTimeout(2 * time.Second).Should(HaveLen(1))
		e := list()[0]
		Expect(e.Reason).To(Equal("Denied"))
		Expect(e.Type).To(Equal(corev1.EventTypeWarning))
		Expect(e.Regarding.UID).To(Equal(p.UID))
		Expect(e.Note).To(HavePrefix("Pod " + ns + "/bad0: spec.containers[0].image: image \"quay.io/x/y:1\""))
	})
})

var _ = Describe("Dry runs", func() {
	It("leave no Event and are counted apart, as sideEffects: None declares", func() {
		ns := newNamespace(nil)
		p := clusterPolicy(ns, "trusted", allowAcme)
		dec := map[string]string{"endpoint": "pod", "decision": "denied"}
		deniedBefore := metricValue("imagegate_admission_decisions_total", dec)
		dryRuns := metricValue("imagegate_admission_dry_run_decisions_total", dec)
		violations := metricValue("imagegate_policy_violations_total", map[string]string{"endpoint": "pod", "policy": "ClusterImagePolicy/" + p.Name, "mode": "Enforce"})

		err := k8sClient.Create(ctx, pod(ns, "dry", "quay.io/x/y:1"), client.DryRunAll)
		Expect(err).To(MatchError(HavePrefix(denied)))

		Expect(metricValue("imagegate_admission_dry_run_decisions_total", dec) - dryRuns).To(Equal(1.0))
		Expect(metricValue("imagegate_admission_decisions_total", dec)).To(Equal(deniedBefore))
		Expect(metricValue("imagegate_policy_violations_total", map[string]string{"endpoint": "pod", "policy": "ClusterImagePolicy/" + p.Name, "mode": "Enforce"})).To(Equal(violations))
		Consistently(func() int {
			var l eventsv1.EventList
			Expect(k8sClient.List(ctx, &l, client.InNamespace("default"))).To(Succeed())
			n := 0
			for _, e := range l.Items {
				if e.Regarding.Name == p.Name {
					n++
				}
			}
			return n
		}).WithTimeout(2 * time.Second).Should(BeZero())
	})
})
