// Package envtestutil holds what the envtest suites of internal/controller and
// internal/webhook share: creating a policy scoped to one spec's namespace and waiting until it
// is in force, and reading a metric from a suite's registry.
package envtestutil

import (
	"context"
	"strconv"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
)

// Pod is a Pod named name in ns with one container per image (c0, c1, ...).
func Pod(ns, name string, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c" + strconv.Itoa(i), Image: img})
	}
	return p
}

// ClusterPolicy creates a ClusterImagePolicy named ns-name that covers only namespace ns
// (unless spec selects namespaces itself), so that specs never see each other's cluster
// policies; it is deleted after the spec. It waits until the policy is Ready.
func ClusterPolicy(ctx context.Context, c client.Client, ns, name string, spec imagegatev1alpha1.ImagePolicySpec) *imagegatev1alpha1.ClusterImagePolicy {
	ginkgo.GinkgoHelper()
	if spec.NamespaceSelector == nil {
		spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
	}
	p := &imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name}, Spec: spec}
	gomega.Expect(c.Create(ctx, p)).To(gomega.Succeed())
	ginkgo.DeferCleanup(func() { gomega.Expect(client.IgnoreNotFound(c.Delete(ctx, p))).To(gomega.Succeed()) })
	WaitReady(ctx, c, p, metav1.ConditionTrue)
	return p
}

// WaitReady waits for the policy's Ready condition to have status want for its current
// generation: the reconciler writes it after the snapshot that holds the policy is in use.
func WaitReady(ctx context.Context, c client.Client, p client.Object, want metav1.ConditionStatus) *metav1.Condition {
	ginkgo.GinkgoHelper()
	var cond *metav1.Condition
	gomega.Eventually(func(g gomega.Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(p), p)).To(gomega.Succeed())
		var status imagegatev1alpha1.ImagePolicyStatus
		switch o := p.(type) {
		case *imagegatev1alpha1.ClusterImagePolicy:
			status = o.Status
		case *imagegatev1alpha1.ImagePolicy:
			status = o.Status
		}
		g.Expect(status.ObservedGeneration).To(gomega.Equal(p.GetGeneration()))
		cond = meta.FindStatusCondition(status.Conditions, imagegatev1alpha1.ConditionReady)
		g.Expect(cond).NotTo(gomega.BeNil())
		g.Expect(cond.Status).To(gomega.Equal(want))
	}).WithTimeout(10 * time.Second).Should(gomega.Succeed())
	return cond
}

// MetricValue reads one series of a registry: a counter's or gauge's value, or a histogram's
// sample count; 0 when the series does not exist yet.
func MetricValue(registry prometheus.Gatherer, name string, labels map[string]string) float64 {
	ginkgo.GinkgoHelper()
	families, err := registry.Gather()
	gomega.Expect(err).NotTo(gomega.HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
