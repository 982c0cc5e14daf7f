package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

var _ = Describe("Policy change preflight", func() {
	It("refuses, through kubectl and the apiserver, attestation conditions that do not compile or cost too much, and stores one that does", func() {
		admin, err := testEnv.AddUser(envtest.User{Name: "admin-" + rand.String(4), Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kubectl, err := admin.Kubectl()
		Expect(err).NotTo(HaveOccurred())
		name := "cel-" + rand.String(5)
		key, err := registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		pem := "          " + strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ") + "\n"
		manifest := filepath.Join(GinkgoT().TempDir(), "policy.yaml")
		apply := func(expression string) (string, error) {
			Expect(os.WriteFile(manifest, []byte(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: `+name+`
spec:
  verify:
    images: ["ghcr.io/acme/**"]
    transparencyLog: Skip
    signers:
    - name: ci
      key:
        publicKey: |
`+pem+`    attestations:
    - name: provenance
      predicateType: https://slsa.dev/provenance/v1
      provenance:
        sourceRepository: https://github.com/acme/app
      conditions:
      - expression: `+expression+`
`), 0o600)).To(Succeed())
			_, stderr, err := kubectl.Run("apply", "-f", manifest)
			return readAll(stderr), err
		}
		out, err := apply(`"predicate.buildDefinition.buildType =="`)
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(`admission webhook "preflight.imagegate.io" denied the request: spec.verify.attestations[0].conditions[0]: Invalid value: compilation failed: ERROR: <input>:1:39: Syntax error`))
		out, err = apply(`"predicate.materials.all(m, predicate.materials.all(n, m != n))"`)
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(`spec.verify.attestations[0].conditions[0]: Invalid value: its estimated cost exceeds the limit by a factor of`))
		var cip imagegatev1alpha1.ClusterImagePolicy
		Expect(client.IgnoreNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &cip))).To(Succeed())
		Expect(cip.Name).To(BeEmpty(), "refused policies are not stored")

		out, err = apply(`"predicate.buildDefinition.externalParameters.workflow.path == '.github/workflows/release.yml'"`)
		Expect(err).NotTo(HaveOccurred(), out)
		DeferCleanup(func() {
			Expect(k8sClient.Delete(ctx, &imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
		})
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &cip)).To(Succeed())
		Expect(cip.Spec.Verify.Attestations[0].Provenance.SourceRepository).To(Equal("https://github.com/acme/app"))
	})

	It("warns, through kubectl and the apiserver, which running Pods a policy would refuse, naming only Pods the requester may list", func() {
		nsA, nsB := "pf-a-"+rand.String(5), "pf-b-"+rand.String(5)
		for _, ns := range []string{nsA, nsB} {
			Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		}
		// Running before the policy: created straight into the apiserver, no policy yet.
		for _, p := range []*corev1.Pod{
			testPod(nsA, "miner", "quay.io/evil/miner:1"), testPod(nsA, "web", "ghcr.io/acme/web:1"), testPod(nsB, "legacy", "quay.io/legacy/app:2"),
		} {
			Expect(k8sClient.Create(ctx, p)).To(Succeed())
		}
		Eventually(func() int {
			n := 0
			for _, ns := range []string{nsA, nsB} {
				var pods corev1.PodList
				Expect(k8sClient.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
				n += len(pods.Items)
			}
			return n
		}).Should(Equal(3))
		time.Sleep(time.Second) // the manager's cache

		name := "pf-" + rand.String(5)
		manifest := filepath.Join(GinkgoT().TempDir(), "policy.yaml")
		write := func(mode string) {
			Expect(os.WriteFile(manifest, []byte(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: `+name+`
spec:
  mode: `+mode+`
  namespaceSelector:
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: In, values: [`+nsA+`, `+nsB+`]}
  images:
    allow: ["ghcr.io/acme/**"]
`), 0o600)).To(Succeed())
		}
		write("Enforce")

		By("kubectl apply --dry-run=server, as an administrator")
		admin, err := testEnv.AddUser(envtest.User{Name: "admin-" + rand.String(4), Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kubectl, err := admin.Kubectl()
		Expect(err).NotTo(HaveOccurred())
		stdout, stderr, err := kubectl.Run("apply", "--dry-run=server", "-f", manifest)
		out := readAll(stderr)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(readAll(stdout)).To(ContainSubstring("(server dry run)"))
		Expect(out).To(ContainSubstring(`Warning: ClusterImagePolicy "` + name + `" would refuse 2 of the 3 running Pods it covers at their next restart (`))
		Expect(out).To(ContainSubstring(nsA + ": 1"))
		Expect(out).To(ContainSubstring(nsB + ": 1"))
		Expect(out).To(ContainSubstring(`Warning: would refuse ` + nsA + `/miner: spec.containers[0].image: image "quay.io/evil/miner:1" is not allowed by ClusterImagePolicy "` + name + `": it matches no pattern in images.allow`))
		Expect(out).To(ContainSubstring(`Warning: would refuse ` + nsB + `/legacy: `))
		var cip imagegatev1alpha1.ClusterImagePolicy
		Expect(client.IgnoreNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &cip))).To(Succeed())
		Expect(cip.Name).To(BeEmpty(), "a dry run creates nothing")

		By("mode Audit refuses nothing, so nothing is said")
		write("Audit")
		_, stderr, err = kubectl.Run("apply", "--dry-run=server", "-f", manifest)
		Expect(err).NotTo(HaveOccurred())
		Expect(readAll(stderr)).NotTo(ContainSubstring("would refuse"))

		By("someone who may list Pods in one namespace only sees that namespace")
		alice := "alice-" + rand.String(4)
		user, err := testEnv.AddUser(envtest.User{Name: alice}, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-editor"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"imagegate.io"}, Resources: []string{"clusterimagepolicies"}, Verbs: []string{"get", "create", "patch", "update"}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-editor"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name + "-editor"},
			Subjects:   []rbacv1.Subject{{Kind: "User", Name: alice}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: nsA},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: nsA},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pods"},
			Subjects:   []rbacv1.Subject{{Kind: "User", Name: alice}},
		})).To(Succeed())
		write("Enforce")
		userKubectl, err := user.Kubectl()
		Expect(err).NotTo(HaveOccurred())
		_, stderr, err = userKubectl.Run("apply", "-f", manifest)
		out = readAll(stderr)
		Expect(err).NotTo(HaveOccurred(), out)
		DeferCleanup(func() {
			Expect(k8sClient.Delete(ctx, &imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
		})
		Expect(out).To(ContainSubstring(`would refuse 1 of the 2 running Pods it covers at their next restart (` + nsA + `: 1)`))
		Expect(out).To(ContainSubstring(`would refuse ` + nsA + `/miner`))
		Expect(out).NotTo(ContainSubstring(nsB))
		Expect(out).To(ContainSubstring("Pods of namespaces where you may not list Pods are left out"))
	})
})

func readAll(r interface{ Read([]byte) (int, error) }) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func testPod(ns, name, image string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c0", Image: image}}}}
}
