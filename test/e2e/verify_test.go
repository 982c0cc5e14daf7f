//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/imagegate/imagegate/test/utils/localcluster"
	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// Signatures checked in a registry that is a process of its own, behind Basic auth, with the
// key and the credentials in Secrets of imagegate's namespace, all through kubectl and the
// real manager: signed tags admitted and pinned, unsigned and moved tags refused, a
// Deployment's Pods pinned, and a registry that stops answering refuses, then recovers.
var _ = Describe("Verifying signatures", Ordered, func() {
	const (
		ns       = "e2e-verify"
		system   = "imagegate-system"
		user     = verifyRegistryUser
		password = verifyRegistryPassword
	)
	var (
		host     string
		registry *exec.Cmd
		// signedPolicy is the ClusterImagePolicy e2e-signed: the registry's acme/ images, in
		// ns, must be signed by the release key.
		signedPolicy = func() string {
			return fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-signed
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/acme/**"]
    transparencyLog: Skip
    pullSecrets: [e2e-registry]
    signers:
    - name: release
      key:
        secretRef: {name: e2e-release-key}
`, ns, host)
		}
		creds = registrytest.Basic(user, password)
		key   *registrytest.Key
	)

	BeforeAll(func() {
		bin := filepath.Join(GinkgoT().TempDir(), "registry")
		build := exec.Command("go", "build", "-o", bin, "./hack/registry")
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "building hack/registry: %s", out)
		// The address the manager's image credential provider answers for (BeforeSuite).
		host = verifyRegistryHost
		registry = exec.Command(bin, "--addr", host, "--user", user, "--password", password)
		registry.Stdout, registry.Stderr = GinkgoWriter, GinkgoWriter
		Expect(registry.Start()).To(Succeed())
		DeferCleanup(func() {
			_ = registry.Process.Signal(syscall.SIGCONT)
			_ = registry.Process.Kill()
			_, _ = registry.Process.Wait()
		})
		Eventually(func() error {
			c, err := net.Dial("tcp", host)
			if err == nil {
				_ = c.Close()
			}
			return err
		}).WithTimeout(30 * time.Second).Should(Succeed())

		key, err = registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		sign := func(repo, tag string) {
			d, err := registrytest.PushTo(host, repo, tag, creds)
			Expect(err).NotTo(HaveOccurred())
			Expect(key.Sign(d, creds)).To(Succeed())
		}
		sign("acme/app", "1.0")
		sign("acme/app", "2.0")
		sign("acme/app", "3.0")
		_, err = registrytest.PushTo(host, "acme/tool", "1", creds)
		Expect(err).NotTo(HaveOccurred())
		sign("acme/moved", "1")
		_, err = registrytest.PushTo(host, "acme/moved", "1", creds) // the tag now names unsigned content
		Expect(err).NotTo(HaveOccurred())

		if run("get", "namespace", system).err != nil {
			kubectl("create", "namespace", system)
		}
		keyFile := filepath.Join(GinkgoT().TempDir(), "cosign.pub")
		Expect(os.WriteFile(keyFile, []byte(key.PublicKeyPEM()), 0o600)).To(Succeed())
		kubectl("create", "secret", "generic", "e2e-release-key", "-n", system, "--from-file=cosign.pub="+keyFile)
		kubectl("create", "secret", "docker-registry", "e2e-registry", "-n", system,
			"--docker-server="+host, "--docker-username="+user, "--docker-password="+password)
		DeferCleanup(func() { run("delete", "secret", "e2e-release-key", "e2e-registry", "-n", system) })

		namespace(ns)
		r := apply(signedPolicy())
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-signed") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-signed", "--timeout=30s")
	})

	It("admits a signed tag and pins the Pod to the digest that was verified", func() {
		kubectl("run", "signed", "-n", ns, "--image="+host+"/acme/app:1.0")
		image := kubectl("get", "pod", "signed", "-n", ns, "-o=jsonpath={.spec.containers[0].image}")
		Expect(image).To(MatchRegexp(`^` + strings.ReplaceAll(host, ".", `\.`) + `/acme/app:1\.0@sha256:[0-9a-f]{64}$`))
	})

	It("refuses an unsigned image and a tag moved to other content after signing, saying why", func() {
		stderr := kubectlRefused("run", "unsigned", "-n", ns, "--image="+host+"/acme/tool:1")
		Expect(stderr).To(ContainSubstring(`admission webhook "pods.imagegate.io" denied the request`))
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-signed": no signature by a trusted signer (tried: key "release"; found no signature`))

		stderr = kubectlRefused("run", "moved", "-n", ns, "--image="+host+"/acme/moved:1")
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-signed": no signature by a trusted signer`))
	})

	It("requires signatures by two different signers where requiredSigners says so, and refuses more than it has at apply", func() {
		security, err := registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		one, err := registrytest.PushTo(host, "acme/dual", "one", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(one, creds)).To(Succeed())
		both, err := registrytest.PushTo(host, "acme/dual", "both", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(both, creds)).To(Succeed())
		Expect(security.Sign(both, creds)).To(Succeed())

		pem := strings.ReplaceAll(strings.TrimSpace(security.PublicKeyPEM()), "\n", "\n          ")
		twoKeys := func(required int) string {
			return fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-two-keys
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/acme/dual"]
    requiredSigners: %d
    transparencyLog: Skip
    pullSecrets: [e2e-registry]
    signers:
    - name: release
      key:
        secretRef: {name: e2e-release-key}
    - name: security
      key:
        publicKey: |
          %s
`, ns, host, required, pem)
		}
		r := apply(twoKeys(3))
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring("requiredSigners cannot be more than the number of signers"))

		r = apply(twoKeys(2))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-two-keys") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-two-keys", "--timeout=30s")

		Eventually(func() string {
			return run("run", "dual-one", "-n", ns, "--image="+one.String(), "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(
			`is not allowed by ClusterImagePolicy "e2e-two-keys": signatures by 2 different trusted signers are required, 1 verified: key "release" (missing: key "security"; found 1 signature`))
		Expect(kubectl("run", "dual-both", "-n", ns, "--image="+both.String())).To(ContainSubstring("pod/dual-both created"))
	})

	It("admits an image signed with a certificate of the company's CA from a ConfigMap, refuses another CA's, and fails closed on a broken bundle", func() {
		corp, err := registrytest.NewPKI("Corp")
		Expect(err).NotTo(HaveOccurred())
		other, err := registrytest.NewPKI("Other")
		Expect(err).NotTo(HaveOccurred())
		now := time.Now()
		release, err := corp.Issue("release@corp.example", now.Add(-time.Hour), now.Add(time.Hour), true)
		Expect(err).NotTo(HaveOccurred())
		impostor, err := other.Issue("release@corp.example", now.Add(-time.Hour), now.Add(time.Hour), true)
		Expect(err).NotTo(HaveOccurred())
		signed, err := registrytest.PushTo(host, "corp/app", "signed", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(release.SignLegacy(signed, true, creds)).To(Succeed())
		foreign, err := registrytest.PushTo(host, "corp/app", "foreign", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(impostor.SignLegacy(foreign, true, creds)).To(Succeed())

		// The ConfigMap holds the root only: the signature carries the intermediate.
		caFile := filepath.Join(GinkgoT().TempDir(), "ca.crt")
		Expect(os.WriteFile(caFile, []byte(registrytest.PEM(corp.Root)), 0o600)).To(Succeed())
		kubectl("create", "configmap", "e2e-corp-ca", "-n", system, "--from-file=ca.crt="+caFile)
		DeferCleanup(func() { run("delete", "configmap", "e2e-corp-ca", "-n", system) })
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-corp
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/corp/app"]
    transparencyLog: Skip
    pullSecrets: [e2e-registry]
    signers:
    - name: corp-pki
      certificate:
        configMapRef: {name: e2e-corp-ca}
        identities:
        - subject: release@corp.example
`, ns, host))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-corp") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-corp", "--timeout=30s")

		Expect(kubectl("run", "corp-signed", "-n", ns, "--image="+signed.String())).To(ContainSubstring("pod/corp-signed created"))
		stderr := kubectlRefused("run", "corp-foreign", "-n", ns, "--image="+foreign.String())
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-corp": no signature by a trusted signer (tried: certificate "corp-pki"; found 1 signature, none verified: the certificate does not chain to the signer's roots`))

		// A bundle that is not PEM: the policy is not Ready, and refuses what it covers.
		r = apply(fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e2e-corp-ca, namespace: %s}\ndata: {ca.crt: not a certificate}\n", system))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		kubectl("wait", "--for=condition=Ready=False", "clusterimagepolicy/e2e-corp", "--timeout=30s")
		Expect(kubectl("get", "clusterimagepolicy", "e2e-corp", "-o=jsonpath={.status.conditions[?(@.type=='Ready')].message}")).
			To(ContainSubstring(`certificate: certificate 1: not PEM`))
		stderr = kubectlRefused("run", "corp-broken", "-n", ns, "--image="+signed.String())
		Expect(stderr).To(ContainSubstring(`certificate 1: not PEM`))
	})

	It("admits and pins a tag signed with Notation by the company's CA from a ConfigMap, and refuses another CA's signature, saying why", func() {
		ca, err := notationtest.NewCA("Acme Release CA")
		Expect(err).NotTo(HaveOccurred())
		rogue, err := notationtest.NewCA("Acme Release CA")
		Expect(err).NotTo(HaveOccurred())
		now := time.Now()
		release, err := ca.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
		Expect(err).NotTo(HaveOccurred())
		impostor, err := rogue.Issue("release", now.Add(-time.Hour), now.Add(time.Hour))
		Expect(err).NotTo(HaveOccurred())
		signed, err := registrytest.PushTo(host, "notary/app", "1.0", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(release.Sign(signed, notationtest.Options{MediaType: notationtest.COSE}, creds)).To(Succeed())
		forged, err := registrytest.PushTo(host, "notary/app", "forged", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(impostor.Sign(forged, notationtest.Options{}, creds)).To(Succeed())

		caFile := filepath.Join(GinkgoT().TempDir(), "ca.crt")
		Expect(os.WriteFile(caFile, []byte(ca.PEM()), 0o600)).To(Succeed())
		kubectl("create", "configmap", "e2e-notation-ca", "-n", system, "--from-file=ca.crt="+caFile)
		DeferCleanup(func() { run("delete", "configmap", "e2e-notation-ca", "-n", system) })
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-notation
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/notary/**"]
    pullSecrets: [e2e-registry]
    signers:
    - name: acme-release
      notation:
        trustStores:
        - {type: ca, name: acme-release-ca, configMapRef: {name: e2e-notation-ca}}
        trustedIdentities: ["x509.subject: %s"]
`, ns, host, notationtest.Subject("release")))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-notation") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-notation", "--timeout=30s")

		kubectl("run", "notation-signed", "-n", ns, "--image="+host+"/notary/app:1.0")
		image := kubectl("get", "pod", "notation-signed", "-n", ns, "-o=jsonpath={.spec.containers[0].image}")
		Expect(image).To(Equal(host + "/notary/app:1.0@" + signed.DigestStr()))
		stderr := kubectlRefused("run", "notation-forged", "-n", ns, "--image="+forged.String())
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-notation": no signature by a trusted signer (tried: notation "acme-release" (1 Notary signature found: certificate chain not trusted by trust store "acme-release-ca"`))
	})

	It("admits an image signed with a key held in AWS KMS, never calling the KMS at admission, and is not Ready for a key the KMS lacks", func() {
		key, err := registrytest.NewKey()
		Expect(err).NotTo(HaveOccurred())
		awsKMS.SetKey("alias/e2e-release", key)
		signed, err := registrytest.PushTo(host, "kms/app", "signed", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(signed, creds)).To(Succeed())
		other, err := registrytest.PushTo(host, "kms/app", "other", creds)
		Expect(err).NotTo(HaveOccurred())

		kmsPolicy := func(name, ref string) string {
			return fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: %s
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/kms/app"]
    transparencyLog: Skip
    pullSecrets: [e2e-registry]
    signers:
    - name: release
      key:
        kms: %s
`, name, ns, host, ref)
		}
		r := apply(kmsPolicy("e2e-kms", "awskms://kms.attacker.example/alias/e2e-release"))
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring("an awskms reference names the key only"))

		r = apply(kmsPolicy("e2e-kms", "awskms:///alias/e2e-release"))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-kms") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-kms", "--timeout=30s")

		before := awsKMS.Requests()
		Expect(kubectl("run", "kms-signed", "-n", ns, "--image="+signed.String())).To(ContainSubstring("pod/kms-signed created"))
		stderr := kubectlRefused("run", "kms-other", "-n", ns, "--image="+other.String())
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-kms": no signature by a trusted signer (tried: key "release"; found no signature`))
		Expect(awsKMS.Requests()).To(Equal(before), "admissions called the KMS")

		r = apply(kmsPolicy("e2e-kms-missing", "awskms:///alias/e2e-missing"))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-kms-missing") })
		kubectl("wait", "--for=condition=Ready=False", "clusterimagepolicy/e2e-kms-missing", "--timeout=30s")
		Eventually(func() string {
			return kubectl("get", "clusterimagepolicy", "e2e-kms-missing", "-o=jsonpath={.status.conditions[?(@.type=='Ready')].message}")
		}).WithTimeout(30 * time.Second).Should(And(
			ContainSubstring("the public key of awskms:///alias/e2e-missing could not be fetched"), ContainSubstring("NotFoundException")))
	})

	It("trusts a multi-architecture image by its index, its platform manifests or either, as indexTrust says", func() {
		push := func(tag string, signIndex, signPlatforms bool) {
			idx, platforms, err := registrytest.PushIndexTo(host, "multi/app", tag, creds, "linux/amd64", "linux/arm64")
			Expect(err).NotTo(HaveOccurred())
			if signIndex {
				Expect(key.Sign(idx, creds)).To(Succeed())
			}
			if signPlatforms {
				for _, d := range platforms {
					Expect(key.Sign(d, creds)).To(Succeed())
				}
			}
		}
		push("index", true, false)
		push("platforms", false, true)
		push("both", true, true)
		push("unsigned", false, false)
		pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-multiarch") })
		for _, c := range []struct {
			trust    string
			admitted []string
			refused  map[string]string
		}{
			{"Index", []string{"index", "both"}, map[string]string{"platforms": "no signature by a trusted signer", "unsigned": "no signature by a trusted signer"}},
			{"Platforms", []string{"platforms", "both"}, map[string]string{"index": "its linux/amd64 manifest sha256:", "unsigned": "its linux/amd64 manifest sha256:"}},
			{"Either", []string{"index", "platforms", "both"}, map[string]string{"unsigned": "the index is not trusted itself (no signature by a trusted signer"}},
		} {
			By("indexTrust: " + c.trust)
			r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-multiarch
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/multi/app"]
    indexTrust: %s
    transparencyLog: Skip
    signers:
    - name: release
      key:
        publicKey: |
          %s
`, ns, host, c.trust, pem))
			Expect(r.err).NotTo(HaveOccurred(), r.stderr)
			kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-multiarch", "--timeout=30s")
			// The manager follows the change within moments: the refusals, each worded as this
			// mode words it, are awaited; then the mode is in force for the admissions.
			for tag, why := range c.refused {
				Eventually(func() string {
					return run("run", "multi-"+strings.ToLower(c.trust)+"-"+tag, "-n", ns, "--dry-run=server", "--image="+host+"/multi/app:"+tag).stderr
				}).WithTimeout(15 * time.Second).Should(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-multiarch": ` + why))
			}
			for _, tag := range c.admitted {
				r := run("run", "multi-"+strings.ToLower(c.trust)+"-"+tag, "-n", ns, "--dry-run=server", "--image="+host+"/multi/app:"+tag)
				Expect(r.err).NotTo(HaveOccurred(), "indexTrust %s should admit %s: %s", c.trust, tag, r.stderr)
			}
		}
	})

	It("reads a registry that wants a password with the nodes' image credential provider, without a pull secret", func() {
		d, err := registrytest.PushTo(host, "cred/app", "1", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(d, creds)).To(Succeed())
		pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-credential-provider
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/cred/app"]
    transparencyLog: Skip
    signers:
    - name: release
      key:
        publicKey: |
          %s
`, ns, host, pem))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-credential-provider") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-credential-provider", "--timeout=30s")
		// The registry refuses anonymous reads: only the plugin's password gets the signature.
		Expect(kubectl("run", "cred-signed", "-n", ns, "--image="+host+"/cred/app:1")).To(ContainSubstring("pod/cred-signed created"))
		Expect(kubectl("get", "pod", "cred-signed", "-n", ns, "-o=jsonpath={.spec.containers[0].image}")).To(Equal(host + "/cred/app:1@" + d.DigestStr()))
	})

	It("refuses to let a namespace's ImagePolicy make imagegate read a registry on an internal address", func() {
		const tenant = "e2e-verify-tenant"
		namespace(tenant)
		pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: tenant-signed
  namespace: %s
spec:
  verify:
    images: ["%s/acme/**"]
    transparencyLog: Skip
    signers:
    - name: ours
      key:
        publicKey: |
          %s
`, tenant, host, pem))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		kubectl("wait", "--for=condition=Ready", "imagepolicy/tenant-signed", "-n", tenant, "--timeout=30s")
		// The registry is on 127.0.0.1, an internal address, and the manager lists no
		// registry in --namespace-internal-registries.
		stderr := kubectlRefused("run", "tenant", "-n", tenant, "--image="+host+"/acme/app:1.0")
		Expect(stderr).To(ContainSubstring(`could not be pinned to a digest for ImagePolicy "tenant-signed"`))
		Expect(stderr).To(ContainSubstring(`127.0.0.1 is an internal address, which a namespace's ImagePolicy may not make imagegate reach (the manager's --namespace-internal-registries lists the registries it may)`))
	})

	It("pins the Pods of a Deployment", func() {
		kubectl("create", "deployment", "signed", "-n", ns, "--image="+host+"/acme/app:2.0")
		Eventually(func() string {
			return kubectl("get", "pods", "-n", ns, "-l", "app=signed", "-o=jsonpath={.items[*].spec.containers[0].image}")
		}).WithTimeout(time.Minute).Should(MatchRegexp(`/acme/app:2\.0@sha256:[0-9a-f]{64}$`))
	})

	// The pinning webhook's match condition follows the verify rules: with none covering
	// the registry, the apiserver no longer calls it for the registry's images; with one
	// again, it pins within seconds. A Pod created meanwhile is pinned or refused, never
	// admitted unpinned while the rule is in force.
	It("calls the pinning webhook only while a verify rule covers the image, never admitting it unpinned under one", func() {
		condition := func() string {
			return kubectl("get", "mutatingwebhookconfiguration", localcluster.PinWebhookConfiguration,
				"-o", `jsonpath={.webhooks[0].matchConditions[?(@.name=="verify-rules")].expression}`)
		}
		// e2e-signed's entry: any namespace (a ClusterImagePolicy), the registry's host, acme.
		entry := "['', '" + strings.Split(host, ":")[0] + "', 'acme']"
		Eventually(condition).WithTimeout(30 * time.Second).Should(ContainSubstring(entry))

		type attempt struct {
			start         time.Time
			image, stderr string
			failed        bool
		}
		var (
			mu       sync.Mutex
			attempts []attempt
			stop     = make(chan struct{})
			done     = make(chan struct{})
		)
		go func() {
			defer GinkgoRecover()
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				r := run("run", fmt.Sprintf("stream-%d", i), "-n", ns, "--image="+host+"/acme/app:2.0", "--dry-run=server", "-o", "jsonpath={.spec.containers[0].image}")
				mu.Lock()
				attempts = append(attempts, attempt{start: start, image: r.stdout, stderr: r.stderr, failed: r.err != nil})
				mu.Unlock()
			}
		}()

		kubectl("delete", "clusterimagepolicy", "e2e-signed")
		deleted := time.Now()
		Eventually(condition).WithTimeout(30 * time.Second).ShouldNot(ContainSubstring(entry))
		GinkgoWriter.Printf("pinning stopped %v after the verify rule was deleted\n", time.Since(deleted))
		Eventually(func() bool {
			mu.Lock()
			defer mu.Unlock()
			if len(attempts) == 0 {
				return false
			}
			last := attempts[len(attempts)-1]
			return last.start.After(deleted) && !last.failed && !strings.Contains(last.image, "@")
		}).WithTimeout(30*time.Second).Should(BeTrue(), "without a verify rule the tag is admitted as written")

		r := apply(signedPolicy())
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-signed", "--timeout=30s")
		ready := time.Now()
		Eventually(func() bool {
			mu.Lock()
			defer mu.Unlock()
			last := attempts[len(attempts)-1]
			return last.start.After(ready) && strings.Contains(last.image, "@sha256:")
		}).WithTimeout(30*time.Second).Should(BeTrue(), "pinning starts again")
		GinkgoWriter.Printf("pinning started %v after the verify rule was Ready\n", time.Since(ready))
		close(stop)
		<-done

		pinned, refused := 0, 0
		for _, a := range attempts {
			if !a.start.After(ready) {
				continue
			}
			if a.failed {
				Expect(a.stderr).To(ContainSubstring("it is not pinned by digest"), "a Pod the condition did not send yet is refused as not pinned")
				refused++
				continue
			}
			Expect(a.image).To(MatchRegexp(`/acme/app:2\.0@sha256:[0-9a-f]{64}$`), "admitted under the verify rule, so pinned")
			pinned++
		}
		GinkgoWriter.Printf("%d creates in all; after the rule was Ready: %d pinned, %d refused as not pinned\n", len(attempts), pinned, refused)
	})

	It("refuses with the registry's failure while the registry does not answer, and admits again when it does", func() {
		Expect(registry.Process.Signal(syscall.SIGSTOP)).To(Succeed())
		start := time.Now()
		stderr := kubectlRefused("run", "stalled", "-n", ns, "--image="+host+"/acme/app:3.0")
		Expect(time.Since(start)).To(BeNumerically("<", 15*time.Second), "the refusal must come before the apiserver's timeout")
		Expect(stderr).To(ContainSubstring(`could not be pinned to a digest for ClusterImagePolicy "e2e-signed"`))
		Expect(stderr).To(MatchRegexp(`timeout|deadline`))
		Expect(run("get", "pod", "stalled", "-n", ns).err).To(HaveOccurred(), "nothing unverified was admitted")

		Expect(registry.Process.Signal(syscall.SIGCONT)).To(Succeed())
		Eventually(func() error {
			return run("run", "resumed", "-n", ns, "--image="+host+"/acme/app:3.0").err
		}).WithTimeout(30 * time.Second).Should(Succeed())
	})

	It("admits a clean attested image, refuses critical findings and a stale scan, and the audit reports a running Pod whose scan expired", func() {
		// Scans in Trivy's format (cosign's vuln/v1 predicate), signed with the release key.
		now := time.Now().UTC().Truncate(time.Second)
		attested := func(tag string, finished time.Time, vulns ...registrytest.Vuln) string {
			d, err := registrytest.PushTo(host, "acme/web", tag, creds)
			Expect(err).NotTo(HaveOccurred())
			Expect(key.Sign(d, creds)).To(Succeed())
			Expect(key.Attest(d, registrytest.AttestationStatement(d, registrytest.CosignVuln, registrytest.TrivyPredicate(finished, vulns...)), creds)).To(Succeed())
			return d.DigestStr()
		}
		clean := attested("clean", now.Add(-5*time.Second), registrytest.Vuln{ID: "CVE-2026-3333", Severity: "LOW"})
		attested("critical", now, registrytest.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"}, registrytest.Vuln{ID: "CVE-2026-2222", Severity: "CRITICAL"})
		attested("stale", now.Add(-72*time.Hour))
		policy := func(ignore string) string {
			return fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-scanned
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/acme/web"]
    transparencyLog: Skip
    pullSecrets: [e2e-registry]
    signers:
    - name: release
      key:
        secretRef: {name: e2e-release-key}
    attestations:
    - name: trivy-scan
      predicateType: https://cosign.sigstore.dev/attestation/vuln/v1
      vulnerabilities:
        maxSeverity: High
        maxAgeSeconds: 40
        scanners: ["pkg:github/aquasecurity/trivy"]
        ignore:
        - id: %s
          reason: e2e
`, ns, host, ignore)
		}
		r := apply(policy("CVE-2026-0000"))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-scanned") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-scanned", "--timeout=30s")

		kubectl("run", "web", "-n", ns, "--image="+host+"/acme/web:clean")
		Expect(kubectl("get", "pod", "web", "-n", ns, "-o=jsonpath={.spec.containers[0].image}")).To(Equal(host + "/acme/web:clean@" + clean))
		stderr := kubectlRefused("run", "web-critical", "-n", ns, "--image="+host+"/acme/web:critical")
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-scanned": its newest vulnerability scan (trivy 0.58.1, finished ` + now.Format(time.RFC3339) + `) has 2 vulnerabilities above High: CVE-2026-1111 (Critical), CVE-2026-2222 (Critical)`))
		stderr = kubectlRefused("run", "web-stale", "-n", ns, "--image="+host+"/acme/web:stale")
		Expect(stderr).To(ContainSubstring(`is 3 days old, older than maxAgeSeconds 40 (40s)`))

		// The kubelet would write this: the container runs the digest it pulled.
		kubectl("patch", "pod", "web", "-n", ns, "--subresource=status", "--type=merge", fmt.Sprintf(
			`-p={"status":{"phase":"Running","containerStatuses":[{"name":"web","image":"%s/acme/web:clean@%s","imageID":"%s/acme/web@%s","ready":true,"restartCount":0,"state":{"running":{}}}]}}`,
			host, clean, host, clean))
		// Past maxAge, a policy edit runs the audit at once (it also runs every --audit-interval).
		time.Sleep(time.Until(now.Add(-5*time.Second + 41*time.Second)))
		r = apply(policy("CVE-2026-0001"))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Eventually(func() string {
			return kubectl("get", "clusterimagepolicy", "e2e-scanned", "-o=jsonpath={.status.audit.violations} {.status.audit.samples[*].pod} {.status.audit.samples[*].rule}")
		}).WithTimeout(30 * time.Second).Should(Equal("1 web verify"))
		Eventually(func() string {
			return kubectl("get", "events", "-n", ns, "--field-selector=reason=RunningImageRefused", "-o=jsonpath={.items[*].message}")
		}).WithTimeout(30 * time.Second).Should(ContainSubstring("older than maxAgeSeconds 40 (40s)"))
		Expect(kubectlRefused("run", "web-again", "-n", ns, "--image="+host+"/acme/web:clean")).To(ContainSubstring("older than maxAgeSeconds 40 (40s)"))
	})

	It("refuses an image whose newest scan is critical though an older clean scan is pushed again and again with a forged date", func() {
		now := time.Now().UTC().Truncate(time.Second)
		d, err := registrytest.PushTo(host, "acme/replayed", "1", creds)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Sign(d, creds)).To(Succeed())
		Expect(key.Attest(d, registrytest.AttestationStatement(d, registrytest.CosignVuln,
			registrytest.TrivyPredicate(now, registrytest.Vuln{ID: "CVE-2026-1111", Severity: "CRITICAL"})), creds)).To(Succeed())
		// The attacker can push but not sign: the old clean scan is signed, and its
		// referrer's annotations (unsigned) say it was created in 2099.
		old, err := key.BundleJSON(registrytest.AttestationStatement(d, registrytest.CosignVuln, registrytest.TrivyPredicate(now.Add(-3*time.Hour))))
		Expect(err).NotTo(HaveOccurred())
		for i := range 40 {
			Expect(registrytest.PushReferrer(d, registrytest.BundleMediaType, registrytest.BundleMediaType, old, map[string]string{
				"dev.sigstore.bundle.predicateType": registrytest.CosignVuln,
				"org.opencontainers.image.created":  "2099-01-01T00:00:00Z",
				"copy":                              fmt.Sprint(i),
			}, creds)).To(Succeed())
		}
		r := apply(fmt.Sprintf(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-replayed
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: %s}
  verify:
    images: ["%s/acme/replayed"]
    transparencyLog: Skip
    pullSecrets: [e2e-registry]
    signers:
    - name: release
      key:
        secretRef: {name: e2e-release-key}
    attestations:
    - name: trivy-scan
      predicateType: https://cosign.sigstore.dev/attestation/vuln/v1
      vulnerabilities:
        maxSeverity: High
        maxAgeSeconds: 86400
`, ns, host))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-replayed") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-replayed", "--timeout=30s")
		stderr := kubectlRefused("run", "replayed", "-n", ns, "--image="+host+"/acme/replayed:1")
		Expect(stderr).To(ContainSubstring(`is not allowed by ClusterImagePolicy "e2e-replayed": its newest vulnerability scan (trivy 0.58.1, finished ` + now.Format(time.RFC3339) + `) has 1 vulnerability above High: CVE-2026-1111 (Critical)`))
	})
})
