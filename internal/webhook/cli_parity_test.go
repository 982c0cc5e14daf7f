package webhook

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/check"
)

// The CLI (imagegate check) and the webhook must never disagree: same policies, same Pod,
// same namespace labels, the same messages, word for word.
var _ = Describe("imagegate check and the webhook", func() {
	It("give identical denials and warnings for the same policies and Pod", func() {
		ns := newNamespace(map[string]string{"parity": "yes"})
		nsSel := &metav1.LabelSelector{MatchLabels: map[string]string{"parity": "yes", "kubernetes.io/metadata.name": ns}}
		specs := map[string]imagegatev1alpha1.ImagePolicySpec{
			"trusted": {NamespaceSelector: nsSel, Images: imagegatev1alpha1.ImageRules{
				Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**", "docker.io/library/*"},
				Deny:  []imagegatev1alpha1.ImagePattern{"docker.io/library/ubuntu"},
			}},
			"no-latest": {NamespaceSelector: nsSel, Mode: imagegatev1alpha1.ModeWarn, Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}},
			"digests":   {NamespaceSelector: nsSel, RequireDigest: ptr.To(true)},
		}
		var policyYAML []string
		for name, spec := range specs {
			p := clusterPolicy(ns, name, spec)
			clean := imagegatev1alpha1.ClusterImagePolicy{
				TypeMeta:   metav1.TypeMeta{APIVersion: imagegatev1alpha1.GroupVersion.String(), Kind: "ClusterImagePolicy"},
				ObjectMeta: metav1.ObjectMeta{Name: p.Name},
				Spec:       p.Spec,
			}
			b, err := yaml.Marshal(&clean)
			Expect(err).NotTo(HaveOccurred())
			policyYAML = append(policyYAML, string(b))
		}

		p := pod(ns, "parity", "ghcr.io/acme/app:1", "quay.io/evil/x:latest", "ubuntu", "nginx",
			"ghcr.io/acme/db@sha256:8b7c3e5f2a1d4c6b9e0f7a8d3c2b1e4f5a6d7c8b9e0f1a2b3c4d5e6f7a8b9c0d")
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
		warnings.Take()
		webhookErr := createErr(p)
		Expect(webhookErr).To(HavePrefix(denied))
		webhookWarnings := warnings.Take()
		Expect(webhookWarnings).NotTo(BeEmpty())

		dir := GinkgoT().TempDir()
		policyFile := filepath.Join(dir, "policies.yaml")
		Expect(os.WriteFile(policyFile, []byte(strings.Join(policyYAML, "---\n")), 0o600)).To(Succeed())
		p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		namespace := corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"parity": "yes"}},
		}
		podYAML, err := yaml.Marshal(p)
		Expect(err).NotTo(HaveOccurred())
		nsYAML, err := yaml.Marshal(&namespace)
		Expect(err).NotTo(HaveOccurred())
		manifestFile := filepath.Join(dir, "pod.yaml")
		Expect(os.WriteFile(manifestFile, []byte(string(podYAML)+"---\n"+string(nsYAML)), 0o600)).To(Succeed())

		report, err := check.Run(ctx, check.Options{PolicyPaths: []string{policyFile}, Paths: []string{manifestFile}})
		Expect(err).NotTo(HaveOccurred())
		Expect(report.Errors).To(BeEmpty())
		Expect(report.Objects).To(HaveLen(1))
		Expect(report.ExitCode()).To(Equal(check.ExitDenied))
		var cliDenials, cliWarnings []string
		for _, v := range report.Objects[0].Violations {
			switch imagegatev1alpha1.PolicyMode(v.Mode) {
			case imagegatev1alpha1.ModeEnforce:
				cliDenials = append(cliDenials, v.Message)
			case imagegatev1alpha1.ModeWarn:
				cliWarnings = append(cliWarnings, v.Message)
			}
		}
		Expect(denied + strings.Join(cliDenials, "\n")).To(Equal(webhookErr))
		Expect(cliWarnings).To(Equal(webhookWarnings))
		// Every rule kind took part.
		Expect(webhookErr).To(And(ContainSubstring("images.allow"), ContainSubstring("images.deny"), ContainSubstring("requireDigest")))
	})
})
