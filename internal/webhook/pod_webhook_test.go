package webhook

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/test/utils/envtestutil"
)

const denied = `admission webhook "pods.imagegate.io" denied the request: `

// newNamespace creates a namespace of its own for one spec, with the default ServiceAccount
// that Pod admission looks up.
func newNamespace(labels map[string]string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + rand.String(6), Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}
	Expect(k8sClient.Create(ctx, sa)).To(Succeed())
	return ns.Name
}

func pod(ns, name string, images ...string) *corev1.Pod { return envtestutil.Pod(ns, name, images...) }

// clusterPolicy creates a ClusterImagePolicy that covers only ns and waits until it is in force.
func clusterPolicy(ns, name string, spec imagegatev1alpha1.ImagePolicySpec) *imagegatev1alpha1.ClusterImagePolicy {
	GinkgoHelper()
	return envtestutil.ClusterPolicy(ctx, k8sClient, ns, name, spec)
}

// waitReady waits for the policy's Ready condition.
func waitReady(p client.Object, want metav1.ConditionStatus) *metav1.Condition {
	GinkgoHelper()
	return envtestutil.WaitReady(ctx, k8sClient, p, want)
}

func createErr(obj client.Object) string {
	if err := k8sClient.Create(ctx, obj); err != nil {
		return err.Error()
	}
	return ""
}

var allowAcme = imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}}}

var _ = Describe("Pod webhook", func() {
	It("admits every Pod when no policy covers it", func() {
		ns := newNamespace(nil)
		Expect(createErr(pod(ns, "any", "quay.io/whatever/app:latest"))).To(BeEmpty())
	})

	It("admits allowed registries and denies others with every violation", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "trusted", allowAcme)
		Expect(createErr(pod(ns, "ok", "ghcr.io/acme/app:1", "ghcr.io/acme/team/db:15"))).To(BeEmpty())
		Expect(createErr(pod(ns, "bad", "ghcr.io/acme/app:1", "quay.io/evil/miner:1", "nginx"))).To(Equal(denied +
			`spec.containers[1].image: image "quay.io/evil/miner:1" is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow` + "\n" +
			`spec.containers[2].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow`))
	})

	It("checks init containers and image volumes", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "trusted", allowAcme)
		p := pod(ns, "vol", "ghcr.io/acme/app:1")
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox:1.36"}}
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "quay.io/data/set:1"}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		Expect(createErr(p)).To(Equal(denied +
			`spec.initContainers[0].image: image "busybox:1.36" (docker.io/library/busybox:1.36) is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow` + "\n" +
			`spec.volumes[0].image.reference: image "quay.io/data/set:1" is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow`))
	})

	It("checks ephemeral containers added through the subresource, as kubectl debug does", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "trusted", allowAcme)
		p := pod(ns, "target", "ghcr.io/acme/app:1")
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debugger", Image: "busybox:1.36", TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent,
		}}}
		err := k8sClient.SubResource("ephemeralcontainers").Update(ctx, p)
		Expect(err).To(MatchError(denied +
			`spec.ephemeralContainers[0].image: image "busybox:1.36" (docker.io/library/busybox:1.36) is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow`))
		p.Spec.EphemeralContainers[0].Image = "ghcr.io/acme/debug:1"
		Expect(k8sClient.SubResource("ephemeralcontainers").Update(ctx, p)).To(Succeed())
	})

	It("checks only new or changed images on UPDATE", func() {
		ns := newNamespace(nil)
		p := pod(ns, "old", "nginx:1.27")
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		clusterPolicy(ns, "trusted", allowAcme)

		By("editing labels of a Pod whose image a later policy forbids")
		p.Labels = map[string]string{"edited": "true"}
		Expect(k8sClient.Update(ctx, p)).To(Succeed())

		By("changing the image, as kubectl set image does")
		p.Spec.Containers[0].Image = "nginx:1.28"
		Expect(k8sClient.Update(ctx, p)).To(MatchError(denied +
			`spec.containers[0].image: image "nginx:1.28" (docker.io/library/nginx:1.28) is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow`))
	})

	It("returns Warn-mode violations as warnings and admits", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "warn-latest", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeWarn, Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}})
		warnings.Take()
		Expect(createErr(pod(ns, "w", "nginx"))).To(BeEmpty())
		Expect(warnings.Take()).To(ContainElement(
			`spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "` + ns + `-warn-latest": it has neither tag nor digest, so it runs as "latest", which is in tags.deny`))
	})

	It("admits silently in Audit mode", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "audit", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeAudit, Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"docker.io/**"}}})
		warnings.Take()
		Expect(createErr(pod(ns, "a", "nginx:1.27"))).To(BeEmpty())
		Expect(warnings.Take()).To(BeEmpty())
	})

	It("applies a ClusterImagePolicy only to the namespaces its namespaceSelector picks", func() {
		ns := newNamespace(map[string]string{"env": "dev"})
		clusterPolicy(ns, "prod-digests", imagegatev1alpha1.ImagePolicySpec{
			RequireDigest:     ptr.To(true),
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod", "kubernetes.io/metadata.name": ns}},
		})
		Expect(createErr(pod(ns, "dev", "nginx:1.27"))).To(BeEmpty())

		nsObj := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj)).To(Succeed())
		nsObj.Labels["env"] = "prod"
		Expect(k8sClient.Update(ctx, nsObj)).To(Succeed())
		Eventually(func() string { return createErr(pod(ns, "prod-"+rand.String(4), "nginx:1.27")) }).WithTimeout(5 * time.Second).Should(
			HaveSuffix(`is not allowed by ClusterImagePolicy "` + ns + `-prod-digests": it is not pinned by digest (@sha256:...) and requireDigest is set`))
	})

	It("lets a namespaced ImagePolicy add a restriction", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "trusted", allowAcme)
		ip := &imagegatev1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "pinned", Namespace: ns}, Spec: imagegatev1alpha1.ImagePolicySpec{RequireDigest: ptr.To(true)}}
		Expect(k8sClient.Create(ctx, ip)).To(Succeed())
		waitReady(ip, metav1.ConditionTrue)
		Expect(createErr(pod(ns, "p", "ghcr.io/acme/app:1"))).To(Equal(denied +
			`spec.containers[0].image: image "ghcr.io/acme/app:1" is not allowed by ImagePolicy "pinned": it is not pinned by digest (@sha256:...) and requireDigest is set`))
	})

	It("puts a policy update in force within a second", func() {
		ns := newNamespace(nil)
		p := clusterPolicy(ns, "moving", imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"quay.io/**"}}})
		Expect(createErr(pod(ns, "before", "ghcr.io/acme/app:1"))).To(BeEmpty())
		p.Spec.Images.Deny = []imagegatev1alpha1.ImagePattern{"ghcr.io/**"}
		Expect(k8sClient.Update(ctx, p)).To(Succeed())
		start := time.Now()
		Eventually(func() string { return createErr(pod(ns, "after-"+rand.String(4), "ghcr.io/acme/app:1")) }).
			WithTimeout(5 * time.Second).WithPolling(5 * time.Millisecond).Should(HavePrefix(denied))
		AddReportEntry("policy update to first denial", time.Since(start).String())
	})

	It("writes Ready=True for a valid policy and Ready=False with the reason for one that cannot compile", func() {
		ns := newNamespace(nil)
		good := clusterPolicy(ns, "good", allowAcme)
		cond := waitReady(good, metav1.ConditionTrue)
		Expect(cond.Reason).To(Equal(imagegatev1alpha1.ReasonCompiled))
		Expect(cond.ObservedGeneration).To(Equal(good.Generation))

		// The schema cannot check label keys, so this one reaches the engine.
		bad := &imagegatev1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: imagegatev1alpha1.ImagePolicySpec{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}},
			Tags:        imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}},
		}}
		Expect(k8sClient.Create(ctx, bad)).To(Succeed())
		cond = waitReady(bad, metav1.ConditionFalse)
		Expect(cond.Reason).To(Equal(imagegatev1alpha1.ReasonInvalid))
		Expect(cond.Message).To(HavePrefix(`the policy is invalid and refuses every Pod it may cover: spec.podSelector: key: Invalid value: "bad key!"`))
		Expect(createErr(pod(ns, "p", "ghcr.io/acme/app:1"))).To(HavePrefix(denied +
			`spec: the Pod is not allowed by ImagePolicy "bad": the policy is invalid, so it refuses every Pod it may cover until it is fixed: spec.podSelector`))
	})

	It("is never sent Pods of the excluded namespaces", func() {
		for _, ns := range podspec.DefaultExcludedNamespaces {
			if ns != "kube-system" { // the apiserver makes kube-system itself
				Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))).To(Succeed())
			}
			Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}))).To(Succeed())
			clusterPolicy(ns, "everything", imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"docker.io/**"}}})
			Expect(createErr(pod(ns, "dependency", "nginx:1.27"))).To(BeEmpty(), ns)
		}
	})
})

// policyFile is one document of test/policies: a policy and, for an invalid one, the
// message the apiserver must answer with.
type policyFile struct {
	path, wantErr string
	obj           client.Object
	// raw is the file as kubectl sends it (a typed object drops empty structs such as images: {}).
	raw *unstructured.Unstructured
}

func readPolicies(dir string) []policyFile {
	files, err := filepath.Glob(filepath.Join(root, "test", "policies", dir, "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(files).NotTo(BeEmpty())
	var out []policyFile
	for _, f := range files {
		b, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		pf := policyFile{path: f}
		for line := range strings.SplitSeq(string(b), "\n") {
			if msg, ok := strings.CutPrefix(line, "# error: "); ok {
				pf.wantErr = msg
			}
		}
		var meta struct{ Kind string }
		Expect(yaml.Unmarshal(b, &meta)).To(Succeed())
		switch meta.Kind {
		case "ClusterImagePolicy":
			pf.obj = &imagegatev1alpha1.ClusterImagePolicy{}
		case "ImagePolicy":
			pf.obj = &imagegatev1alpha1.ImagePolicy{}
		default:
			Fail(f + ": unknown kind " + meta.Kind)
		}
		Expect(yaml.UnmarshalStrict(b, pf.obj)).To(Succeed(), f)
		pf.raw = &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(b, &pf.raw.Object)).To(Succeed(), f)
		out = append(out, pf)
	}
	return out
}

var _ = Describe("Policy schema", func() {
	It("accepts every valid policy, and the engine compiles it", func() {
		ns := newNamespace(nil)
		for _, pf := range readPolicies("valid") {
			if _, ok := pf.obj.(*imagegatev1alpha1.ImagePolicy); ok {
				pf.obj.SetNamespace(ns)
			}
			Expect(k8sClient.Create(ctx, pf.obj, client.DryRunAll)).To(Succeed(), pf.path)
			var snap *policy.Snapshot
			var ref policy.Ref
			switch o := pf.obj.(type) {
			case *imagegatev1alpha1.ClusterImagePolicy:
				snap, ref = policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{*o}, nil), policy.Ref{Kind: policy.KindClusterImagePolicy, Name: o.Name}
			case *imagegatev1alpha1.ImagePolicy:
				snap, ref = policy.Compile(nil, []imagegatev1alpha1.ImagePolicy{*o}), policy.Ref{Kind: policy.KindImagePolicy, Namespace: o.Namespace, Name: o.Name}
			}
			Expect(snap.PolicyError(ref)).To(BeEmpty(), pf.path)
		}
	})

	It("refuses every invalid policy with a message naming the field", func() {
		ns := newNamespace(nil)
		var mismatches []string
		for _, pf := range readPolicies("invalid") {
			Expect(pf.wantErr).NotTo(BeEmpty(), pf.path+" needs an '# error: ' line")
			if _, ok := pf.obj.(*imagegatev1alpha1.ImagePolicy); ok {
				pf.raw.SetNamespace(ns)
			}
			err := k8sClient.Create(ctx, pf.raw, client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), pf.wantErr) {
				mismatches = append(mismatches, fmt.Sprintf("%s: want %q, got %v", pf.path, pf.wantErr, err))
			}
		}
		Expect(mismatches).To(BeEmpty())
	})
})

var _ = Describe("Break-glass through the Pod webhook", func() {
	It("admits with a warning through a policy that allows it, and only that one", func() {
		ns := newNamespace(nil)
		spec := allowAcme
		spec.AllowBreakGlass = ptr.To(true)
		clusterPolicy(ns, "glass", spec)
		warnings.Take()
		p := pod(ns, "hotfix", "quay.io/vendor/hotfix:1")
		p.Annotations = map[string]string{"alpha.image-policy.k8s.io/break-glass": "true"}
		Expect(createErr(p)).To(BeEmpty())
		Expect(warnings.Take()).To(ContainElement(
			`spec.containers[0].image: image "quay.io/vendor/hotfix:1" is not allowed by ClusterImagePolicy "` + ns + `-glass": it matches no pattern in images.allow; admitted by break-glass`))

		clusterPolicy(ns, "strict", imagegatev1alpha1.ImagePolicySpec{Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}})
		q := pod(ns, "hotfix2", "quay.io/vendor/hotfix:latest")
		q.Annotations = p.Annotations
		Expect(createErr(q)).To(Equal(denied +
			`spec.containers[0].image: image "quay.io/vendor/hotfix:latest" is not allowed by ClusterImagePolicy "` + ns + `-strict": its tag "latest" is in tags.deny`))
	})
})
