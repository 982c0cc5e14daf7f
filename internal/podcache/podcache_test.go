package podcache

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/imagegate/imagegate/internal/podspec"
)

func pod(ns, name, image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c0", Image: image}}},
	}
}

// The cache holds Running records, by namespace, and records the namespaces whose Pods
// changed in what a verdict reads: not a status update that changes none of it.
func TestCacheFollowsWhatVerdictsRead(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset(pod("a", "web", "ghcr.io/acme/web:1"), pod("b", "db", "ghcr.io/acme/db:1"))
	c, err := NewWithClient(cs, false)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.NeedLeaderElection()).To(BeFalse())
	take := c.Follow()
	go func() { _ = c.Start(ctx) }()

	pods, err := c.Pods(ctx, "a")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(pods).To(HaveLen(1))
	g.Expect(pods[0].Images).To(HaveLen(1))
	g.Expect(pods[0].Images[0].Ref).To(Equal("ghcr.io/acme/web:1"))
	g.Expect(take()).To(Equal(map[string]bool{"a": true, "b": true}), "the initial list")
	g.Expect(take()).To(BeEmpty())

	waitFor := func(ns, name string, ok func(*podspec.Running) bool) {
		t.Helper()
		g.Eventually(func() bool {
			pods, _ := c.Pods(ctx, ns)
			for _, p := range pods {
				if p.Name == name && ok(p) {
					return true
				}
			}
			return false
		}).WithTimeout(5 * time.Second).Should(BeTrue())
	}

	// A status update that changes nothing a verdict reads: no namespace recorded.
	web, err := cs.CoreV1().Pods("a").Get(ctx, "web", metav1.GetOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	web.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	web.ResourceVersion = "2"
	_, err = cs.CoreV1().Pods("a").UpdateStatus(ctx, web, metav1.UpdateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	waitFor("a", "web", func(p *podspec.Running) bool { return p.ResourceVersion == "2" })
	g.Expect(take()).To(BeEmpty())

	// The digest the container runs changes the verdict of a verify rule.
	web.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c0", ImageID: "ghcr.io/acme/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}
	web.ResourceVersion = "3"
	_, err = cs.CoreV1().Pods("a").UpdateStatus(ctx, web, metav1.UpdateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	waitFor("a", "web", func(p *podspec.Running) bool { return p.Images[0].Running != "" })
	g.Expect(take()).To(Equal(map[string]bool{"a": true}))

	// A relabelled Pod, a new one and a deleted one.
	web.Labels["app"] = "other"
	web.ResourceVersion = "4"
	_, err = cs.CoreV1().Pods("a").Update(ctx, web, metav1.UpdateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	waitFor("a", "web", func(p *podspec.Running) bool { return p.Labels["app"] == "other" })
	_, err = cs.CoreV1().Pods("c").Create(ctx, pod("c", "new", "ghcr.io/acme/new:1"), metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	waitFor("c", "new", func(*podspec.Running) bool { return true })
	g.Expect(cs.CoreV1().Pods("b").Delete(ctx, "db", metav1.DeleteOptions{})).To(Succeed())
	g.Eventually(func() []*podspec.Running {
		pods, _ := c.Pods(ctx, "b")
		return pods
	}).WithTimeout(5 * time.Second).Should(BeEmpty())
	g.Expect(take()).To(Equal(map[string]bool{"a": true, "b": true, "c": true}))

	// A second follower records on its own.
	other := c.Follow()
	_, err = cs.CoreV1().Pods("d").Create(ctx, pod("d", "x", "ghcr.io/acme/x:1"), metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	waitFor("d", "x", func(*podspec.Running) bool { return true })
	g.Expect(other()).To(Equal(map[string]bool{"d": true}))
	g.Expect(take()).To(Equal(map[string]bool{"d": true}))
}

// A read waits for the cache to be filled, and gives up with the caller's context on a
// replica where the cache does not run.
func TestCacheReadsWaitForTheCache(t *testing.T) {
	g := NewWithT(t)
	c, err := NewWithClient(fake.NewClientset(), true)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.NeedLeaderElection()).To(BeTrue())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Pods(ctx, "a")
	g.Expect(err).To(MatchError(ContainSubstring("not running on this replica")))
}
