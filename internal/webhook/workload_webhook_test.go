package webhook

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
)

func template(image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "w"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

const deniedWorkload = `admission webhook "workloads.imagegate.io" denied the request: `

var selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "w"}}

// workloads returns one object of every checked kind, with image in its pod template, and
// the field path of that image.
func workloads(ns, image string) map[client.Object]string {
	meta := func(kind string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: "w-" + kind, Namespace: ns} }
	tmpl := template(image)
	jobTmpl := template(image)
	jobTmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	rcTmpl := template(image)
	return map[client.Object]string{
		&appsv1.Deployment{ObjectMeta: meta("deployment"), Spec: appsv1.DeploymentSpec{Selector: selector, Template: tmpl}}:                                       "spec.template.spec.containers[0].image",
		&appsv1.ReplicaSet{ObjectMeta: meta("replicaset"), Spec: appsv1.ReplicaSetSpec{Selector: selector, Template: tmpl}}:                                       "spec.template.spec.containers[0].image",
		&appsv1.StatefulSet{ObjectMeta: meta("statefulset"), Spec: appsv1.StatefulSetSpec{Selector: selector, Template: tmpl}}:                                    "spec.template.spec.containers[0].image",
		&appsv1.DaemonSet{ObjectMeta: meta("daemonset"), Spec: appsv1.DaemonSetSpec{Selector: selector, Template: tmpl}}:                                          "spec.template.spec.containers[0].image",
		&batchv1.Job{ObjectMeta: meta("job"), Spec: batchv1.JobSpec{Template: jobTmpl}}:                                                                           "spec.template.spec.containers[0].image",
		&corev1.ReplicationController{ObjectMeta: meta("rc"), Spec: corev1.ReplicationControllerSpec{Selector: map[string]string{"app": "w"}, Template: &rcTmpl}}: "spec.template.spec.containers[0].image",
		&batchv1.CronJob{ObjectMeta: meta("cronjob"), Spec: batchv1.CronJobSpec{
			Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: jobTmpl}},
		}}: "spec.jobTemplate.spec.template.spec.containers[0].image",
	}
}

var _ = Describe("Workload webhook", func() {
	It("refuses every workload kind with a disallowed image, naming the template field", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "trusted", allowAcme)
		for obj, field := range workloads(ns, "quay.io/evil/miner:1") {
			kind := obj.GetName()
			Expect(createErr(obj)).To(Equal(deniedWorkload+field+`: image "quay.io/evil/miner:1" is not allowed by ClusterImagePolicy "`+ns+`-trusted": it matches no pattern in images.allow`), kind)
		}
		for obj := range workloads(ns, "ghcr.io/acme/app:1") {
			Expect(createErr(obj)).To(BeEmpty(), obj.GetName())
		}
	})

	It("checks only changed images on update, and never blocks scaling", func() {
		ns := newNamespace(nil)
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: appsv1.DeploymentSpec{Selector: selector, Template: template("quay.io/old/app:1")}}
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		clusterPolicy(ns, "trusted", allowAcme)

		// The old image is already there: scaling and label edits go through.
		d.Spec.Replicas = ptr.To[int32](5)
		d.Labels = map[string]string{"team": "a"}
		Expect(k8sClient.Update(ctx, d)).To(Succeed())

		d.Spec.Template.Spec.Containers[0].Image = "quay.io/new/app:2"
		Expect(k8sClient.Update(ctx, d)).To(MatchError(deniedWorkload +
			`spec.template.spec.containers[0].image: image "quay.io/new/app:2" is not allowed by ClusterImagePolicy "` + ns + `-trusted": it matches no pattern in images.allow`))
	})

	It("returns Warn-mode warnings at apply time", func() {
		ns := newNamespace(nil)
		clusterPolicy(ns, "no-latest", imagegatev1alpha1.ImagePolicySpec{Mode: imagegatev1alpha1.ModeWarn, Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}})
		warnings.Take()
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: appsv1.DeploymentSpec{Selector: selector, Template: template("ghcr.io/acme/web:latest")}}
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Expect(warnings.Take()).To(ContainElement(
			`spec.template.spec.containers[0].image: image "ghcr.io/acme/web:latest" is not allowed by ClusterImagePolicy "` + ns + `-no-latest": its tag "latest" is in tags.deny`))
	})

	It("skips policies with checkWorkloads: false, whose Pods are still refused", func() {
		ns := newNamespace(nil)
		spec := allowAcme
		spec.CheckWorkloads = ptr.To(false)
		clusterPolicy(ns, "pods-only", spec)
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: appsv1.DeploymentSpec{Selector: selector, Template: template("quay.io/evil/x:1")}}
		Expect(createErr(d)).To(BeEmpty())
		Expect(createErr(pod(ns, "p", "quay.io/evil/x:1"))).To(HavePrefix(denied))
	})
})
