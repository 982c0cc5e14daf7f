package webhook

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
)

// The bypasses of issue 15 through the real apiserver and the shipped webhook configuration
// (its matchConditions decide which UPDATEs the webhook even sees).
var _ = Describe("Bypasses", func() {
	It("refuses an image ID, whatever the allow-list", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "hub", imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"docker.io/library/*", "**"}}})
		for _, id := range []string{"sha256:" + strings.Repeat("0", 64), "sha256:4f1d", "sha512:cafe"} {
			Expect(createErr(pod(ns, "id", id))).To(Equal(denied + `spec.containers[0].image: image "` + id + `" is not allowed by ClusterImagePolicy "` + ns +
				`-hub": it could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)`))
		}
	})

	It("checks every image of a Pod relabelled into a podSelector", func() {
		ns := newNamespace(nil)
		p := pod(ns, "backdoor", "docker.io/attacker/backdoor:1")
		p.Labels = map[string]string{"app": "tmp"}
		clusterPolicy(ns, "payments", imagegatev1alpha1.ImagePolicySpec{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "payments"}}, Images: allowAcme.Images,
		})
		Expect(createErr(p)).To(BeEmpty(), "no policy covers app=tmp")

		p.Labels = map[string]string{"app": "payments"}
		Expect(k8sClient.Update(ctx, p)).To(MatchError(denied + `spec.containers[0].image: image "docker.io/attacker/backdoor:1" is not allowed by ClusterImagePolicy "` +
			ns + `-payments": it matches no pattern in images.allow`))

		By("other label edits still pass: the policy does not cover the Pod before or after")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		p.Labels = map[string]string{"app": "tmp", "edited": "yes"}
		Expect(k8sClient.Update(ctx, p)).To(Succeed())
	})

	It("checks every image of a workload whose template is relabelled into a podSelector", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "payments", imagegatev1alpha1.ImagePolicySpec{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "payments"}}, Images: allowAcme.Images,
		})
		tmpl := template("docker.io/attacker/backdoor:1")
		tmpl.Labels = map[string]string{"app": "w", "role": "tmp"}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: ns}, Spec: appsv1.DeploymentSpec{Selector: selector, Template: tmpl}}
		Expect(createErr(d)).To(BeEmpty(), "no policy covers role=tmp")

		d.Spec.Template.Labels = map[string]string{"app": "w", "role": "payments"}
		Expect(k8sClient.Update(ctx, d)).To(MatchError(deniedWorkload + `spec.template.spec.containers[0].image: image "docker.io/attacker/backdoor:1" is not allowed by ClusterImagePolicy "` +
			ns + `-payments": it matches no pattern in images.allow`))
	})
})
