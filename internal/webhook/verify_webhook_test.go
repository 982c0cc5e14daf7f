package webhook

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

var _ = Describe("Verifying signatures", Ordered, func() {
	var (
		reg      *registrytest.Registry
		key      *registrytest.Key
		ns       string
		signed   string // repo:tag whose digest is signed
		unsigned string
	)
	BeforeAll(func() {
		reg = registrytest.New(true)
		DeferCleanup(reg.Close)
		var err error
		key, err = registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		d, err := reg.Push("acme/app", "1.4")
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(d)).To(Succeed())
		signed = reg.Host + "/acme/app:1.4"
		_, err = reg.Push("acme/tool", "2")
		Expect(err).NotTo(HaveOccurred())
		unsigned = reg.Host + "/acme/tool:2"

		system := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: trustNamespace}}
		if err := k8sClient.Create(ctx, system); err != nil && !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "release-key", Namespace: trustNamespace},
			Data:       map[string][]byte{"cosign.pub": []byte(key.PublicKeyPEM())},
		})).To(Succeed())
		ns = newNamespace(nil)
	})

	verifySpec := func(secret string) imagegatev1alpha1.ImagePolicySpec {
		return imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Signers: []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{
				SecretRef: imagegatev1alpha1.SecretKeyReference{Name: imagegatev1alpha1.ObjectName(secret)},
			}}},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
		}}
	}

	It("pins a signed tag to its digest and stores the Pod with it; refuses an unsigned one", func() {
		p := clusterPolicy(ns, "signed", verifySpec("release-key"))
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed()) })
		warnings.Take()

		good := pod(ns, "signed", signed)
		Expect(k8sClient.Create(ctx, good)).To(Succeed())
		stored := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(good), stored)).To(Succeed())
		Expect(stored.Spec.Containers[0].Image).To(MatchRegexp(`^` + strings.ReplaceAll(signed, ".", `\.`) + `@sha256:[0-9a-f]{64}$`))
		Expect(strings.Join(warnings.Take(), "\n")).To(ContainSubstring(`imagegate pinned "` + signed + `" to sha256:`))

		err := createErr(pod(ns, "unsigned", unsigned))
		Expect(err).To(ContainSubstring(denied))
		Expect(err).To(ContainSubstring(`is not allowed by ClusterImagePolicy "` + p.Name + `": no signature by a trusted signer (tried: key "release"; found no signature`))
	})

	It("admits a Deployment with a warning: its Pods are verified and pinned when they are created", func() {
		p := clusterPolicy(ns, "signed-workloads", verifySpec("release-key"))
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed()) })
		warnings.Take()
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "unsigned", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: unsigned}}},
				},
			},
		}
		Expect(k8sClient.Create(ctx, dep)).To(Succeed())
		Expect(warnings.Take()).To(ContainElement(verifyDeferred))
	})

	It("is Ready=False and refuses every image it covers while its key Secret is missing", func() {
		spec := verifySpec("no-such-secret")
		spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
		p := &imagegatev1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: ns + "-missing-key"}, Spec: spec}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed()) })
		cond := waitReady(p, metav1.ConditionFalse)
		Expect(cond.Message).To(ContainSubstring(`Secret "no-such-secret": not found`))
		err := createErr(pod(ns, "refused", signed))
		Expect(err).To(ContainSubstring(`ClusterImagePolicy "` + p.Name + `"`))
		Expect(err).To(ContainSubstring(`Secret "no-such-secret": not found`))

		By("creating the Secret: the policy comes into force without being touched")
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "no-such-secret", Namespace: trustNamespace},
			Data:       map[string][]byte{"cosign.pub": []byte(key.PublicKeyPEM())},
		})).To(Succeed())
		waitReady(p, metav1.ConditionTrue)
		Expect(k8sClient.Create(ctx, pod(ns, "admitted", signed))).To(Succeed())
	})
})

var _ = Describe("Verifying with the Pod's own pull secrets (--pull-secrets-from-pods)", func() {
	It("reads a private registry with the Pod's imagePullSecrets, and refuses without them", func() {
		reg := registrytest.New(true)
		DeferCleanup(reg.Close)
		reg.RequireBasicAuth("team", "pw")
		creds := registrytest.Basic("team", "pw")
		key, err := registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		d, err := registrytest.PushTo(reg.Host, "team/app", "1", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(d, creds)).To(Succeed())

		ns := newNamespace(nil)
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: ns},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
				`{"auths":{"` + reg.Host + `":{"username":"team","password":"pw"}}}`)},
		})).To(Succeed())
		p := clusterPolicy(ns, "private", imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Signers:         []imagegatev1alpha1.Signer{{Name: "release", Key: imagegatev1alpha1.KeySigner{PublicKey: key.PublicKeyPEM()}}},
			TransparencyLog: imagegatev1alpha1.TransparencyLogSkip,
		}})
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed()) })

		image := reg.Host + "/team/app:1"
		err = k8sClient.Create(ctx, pod(ns, "without", image))
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("401 Unauthorized"))

		with := pod(ns, "with", image)
		with.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "pull"}}
		Expect(k8sClient.Create(ctx, with)).To(Succeed())
		stored := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(with), stored)).To(Succeed())
		Expect(stored.Spec.Containers[0].Image).To(HavePrefix(image + "@sha256:"))
	})
})

var _ = Describe("Verifying Notation signatures", func() {
	It("pins a Notation-signed tag, and refuses it once the CA's CRL in the ConfigMap revokes the certificate", func() {
		reg := registrytest.New(false) // the referrers tag, as notation writes it without the API
		DeferCleanup(reg.Close)
		ca, err := notationtest.NewCA("Acme Release CA")
		Expect(err).NotTo(HaveOccurred())
		now := time.Now()
		release, err := ca.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
		Expect(err).NotTo(HaveOccurred())
		d, err := reg.Push("acme/ledger", "2.0")
		Expect(err).NotTo(HaveOccurred())
		Expect(release.SignWithNotation(ctx, d, notationtest.COSE)).To(Succeed())
		image := reg.Host + "/acme/ledger:2.0"

		system := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: trustNamespace}}
		if err := k8sClient.Create(ctx, system); err != nil && !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		empty, err := ca.CRL(now.Add(24 * time.Hour))
		Expect(err).NotTo(HaveOccurred())
		crls := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "acme-crls", Namespace: trustNamespace}, Data: map[string]string{"crls.pem": empty}}
		Expect(k8sClient.Create(ctx, crls)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, crls))).To(Succeed()) })
		ns := newNamespace(nil)
		p := clusterPolicy(ns, "notation", imagegatev1alpha1.ImagePolicySpec{Verify: imagegatev1alpha1.VerifyRules{
			Signers: []imagegatev1alpha1.Signer{{Name: "acme-release", Notation: imagegatev1alpha1.NotationSigner{
				TrustStores:       []imagegatev1alpha1.NotationTrustStore{{Type: imagegatev1alpha1.NotationStoreCA, Name: "acme", Certificates: ca.PEM()}},
				TrustedIdentities: []string{"x509.subject: " + notationtest.Subject("release")},
				CRLs:              imagegatev1alpha1.NotationCRLReference{Name: "acme-crls"},
			}}},
		}})
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed()) })

		good := pod(ns, "ledger", image)
		Expect(k8sClient.Create(ctx, good)).To(Succeed())
		stored := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(good), stored)).To(Succeed())
		Expect(stored.Spec.Containers[0].Image).To(Equal(image + "@" + d.DigestStr()))

		By("revoking the certificate in the ConfigMap: the verified result cached before does not count")
		revoked, err := ca.CRL(now.Add(24*time.Hour), release.Cert)
		Expect(err).NotTo(HaveOccurred())
		crls.Data["crls.pem"] = revoked
		Expect(k8sClient.Update(ctx, crls)).To(Succeed())
		attempt := 0
		Eventually(func() string {
			attempt++
			return createErr(pod(ns, fmt.Sprintf("ledger-%d", attempt), image))
		}).WithTimeout(10 * time.Second).
			Should(ContainSubstring(`no signature by a trusted signer (tried: notation "acme-release" (1 Notary signature found: signing certificate with subject "CN=release,O=Acme,L=Seattle,ST=WA,C=US" is revoked))`))
	})
})
