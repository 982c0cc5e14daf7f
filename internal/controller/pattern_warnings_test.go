package controller_test

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/test/utils/envtestutil"
)

// config/admission-policies/pattern-warnings.yaml warns at apply, in the apiserver, about
// exactly the patterns the engine warns about in the policy's Ready condition.
var _ = Describe("the pattern warnings ValidatingAdmissionPolicy", Ordered, func() {
	var (
		warnings = &envtestutil.WarningRecorder{}
		warned   client.Client
	)

	BeforeAll(func() {
		f, err := os.Open(filepath.Join("..", "..", "config", "admission-policies", "pattern-warnings.yaml"))
		Expect(err).NotTo(HaveOccurred())
		defer func() { _ = f.Close() }()
		dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		var vap admissionregistrationv1.ValidatingAdmissionPolicy
		var binding admissionregistrationv1.ValidatingAdmissionPolicyBinding
		Expect(dec.Decode(&vap)).To(Succeed())
		Expect(dec.Decode(&binding)).To(Succeed())
		Expect(k8sClient.Create(ctx, &vap)).To(Succeed())
		Expect(k8sClient.Create(ctx, &binding)).To(Succeed())
		DeferCleanup(func() {
			Expect(k8sClient.Delete(ctx, &binding)).To(Succeed())
			Expect(k8sClient.Delete(ctx, &vap)).To(Succeed())
		})

		cfg := rest.CopyConfig(testEnv.Config)
		cfg.WarningHandler = warnings
		warned, err = client.New(cfg, client.Options{Scheme: k8sClient.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		// The apiserver loads a new policy in the background: wait until it warns.
		probe := func() []string {
			p := &imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "probe"},
				Spec: imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"evil.io"}}}}
			Expect(warned.Create(ctx, p, client.DryRunAll)).To(Succeed())
			return warnings.Take()
		}
		Eventually(probe).WithTimeout(30 * time.Second).ShouldNot(BeEmpty())
	})

	It("warns for a pattern if and only if the engine does", func() {
		patterns := []string{
			"evil.io", "registry.corp:5000", "localhost", "localhost:5000", "evil.io@sha256:" + strings.Repeat("a", 64),
			"evil.io:5000@sha256:" + strings.Repeat("b", 64), "a.b.c", "my.registry",
			"nginx", "nginx:1.27", "redis:6.2", "library", "*", "**", "localhostx", "xlocalhost",
			"evil.io/**", "ghcr.io/acme/*", "localhost/app", "localhost:5000/app", "docker.io/library/nginx",
			"nginx@sha256:" + strings.Repeat("c", 64), "my_image", "my-image:v1.2", "a__b",
		}
		for _, field := range []string{"images.allow", "images.deny", "exemptImages"} {
			for _, raw := range patterns {
				spec := imagegatev1alpha1.ImagePolicySpec{}
				p := []imagegatev1alpha1.ImagePattern{imagegatev1alpha1.ImagePattern(raw)}
				switch field {
				case "images.allow":
					spec.Images.Allow = p
				case "images.deny":
					spec.Images.Deny = p
				default:
					spec.Images.Allow = []imagegatev1alpha1.ImagePattern{"ghcr.io/**"}
					spec.ExemptImages = p
				}
				cp := imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "patterns"}, Spec: spec}
				Expect(warned.Create(ctx, cp.DeepCopy(), client.DryRunAll)).To(Succeed(), raw)
				got := warnings.Take()

				snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{cp}, nil)
				Expect(snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "patterns"})).To(BeEmpty(), raw)
				engine := snap.PolicyWarnings(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "patterns"})
				Expect(got).To(HaveLen(len(engine)), "%s %q: the apiserver warned %q, the engine %q", field, raw, got, engine)
				if len(got) == 1 {
					suggestion := strings.Split(raw, "@")[0] + "/**"
					Expect(got[0]).To(ContainSubstring("ValidatingAdmissionPolicy 'pattern-warnings'"), raw)
					Expect(got[0]).To(ContainSubstring(": spec."+field+": "), raw)
					Expect(got[0]).To(ContainSubstring(`did you mean "`+suggestion+`"?`), raw)
					Expect(engine[0]).To(ContainSubstring(`did you mean "`+suggestion+`"?`), raw)
				}
			}
		}
	})

	It("names every bare host of a list in one warning and never refuses the policy", func() {
		ns := newNamespace(nil)
		p := &imagegatev1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "typos"},
			Spec: imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"evil.io", "ghcr.io/evil/**", "bad.example:5000"}}}}
		Expect(warned.Create(ctx, p)).To(Succeed())
		Expect(warnings.Take()).To(ConsistOf(HaveSuffix(`: spec.images.deny: "evil.io" names the Docker Hub image docker.io/library/evil.io, not the registry evil.io: did you mean "evil.io/**"?; ` +
			`"bad.example:5000" names the Docker Hub image docker.io/library/bad.example:5000, not the registry bad.example:5000: did you mean "bad.example:5000/**"?`)))
		before := p.DeepCopy()
		p.Spec.Images.Deny = []imagegatev1alpha1.ImagePattern{"evil.io/**"}
		Expect(warned.Patch(ctx, p, client.MergeFrom(before))).To(Succeed())
		Expect(warnings.Take()).To(BeEmpty(), "a corrected policy draws no warning")
	})
})
