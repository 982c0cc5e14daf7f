//go:build e2e

package e2e

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The policy every spec below starts from: the acme organization's registry only.
// trusted covers every namespace but those of the verify specs, whose images live in a
// registry on loopback, of the exception specs, which use a vendor's image on Docker Hub, and
// of the --admission-policies specs, which name the policy that refuses, and of the
// container runtime specs, whose images live in a registry on loopback (the specs run in
// random order, so this one may be in force then).
const trusted = `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-trusted
spec:
  namespaceSelector:
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: [e2e-verify, e2e-verify-tenant, e2e-exceptions, e2e-vap, e2e-node]}
  images:
    allow: ["ghcr.io/acme/**"]
`

const denyMessage = `admission webhook "pods.imagegate.io" denied the request`

var _ = Describe("imagegate through kubectl", Ordered, func() {
	BeforeAll(func() {
		r := apply(trusted)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-trusted", "--timeout=60s")
		namespace("e2e")
		// The snapshot is built asynchronously from the policy: wait until it denies.
		Eventually(func() string {
			r := run("run", "probe", "-n", "e2e", "--image=quay.io/x/y:1", "--dry-run=server")
			return r.stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))
	})

	It("refuses an invalid policy at kubectl apply with the field and the reason", func() {
		manifest, err := os.ReadFile(filepath.Join(root, "test", "policies", "invalid", "glob-host.yaml"))
		Expect(err).NotTo(HaveOccurred())
		r := runIn(manifest, "apply", "-f", "-")
		Expect(r.err).To(HaveOccurred())
		Expect(r.stderr).To(ContainSubstring(`spec.exemptImages[0]: Invalid value: "*.dkr.ecr.us-east-1.amazonaws.com/app": a registry host cannot contain * or **`))
	})

	It("warns at kubectl apply about a bare registry host as a pattern, and stores the policy", func() {
		// config/admission-policies: a ValidatingAdmissionPolicy the apiserver runs itself.
		// The apiserver loads it in the background, hence Eventually.
		typo := "apiVersion: imagegate.io/v1alpha1\nkind: ImagePolicy\nmetadata: {name: typo, namespace: e2e}\nspec:\n  images: {deny: [evil.io]}\n"
		Eventually(func() string {
			return runIn([]byte(typo), "apply", "--dry-run=server", "-f", "-").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(`Warning: Validation failed for ValidatingAdmissionPolicy 'imagegate-pattern-warnings'`))
		r := apply(typo)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring(`spec.images.deny: "evil.io" names the Docker Hub image docker.io/library/evil.io, not the registry evil.io: did you mean "evil.io/**"?`))
		Expect(r.stdout).To(ContainSubstring("imagepolicy.imagegate.io/typo created"))
		kubectl("delete", "imagepolicy", "typo", "-n", "e2e")
	})

	It("admits kubectl run of an allowed image and refuses a disallowed one with the whole message", func() {
		Expect(kubectl("run", "web", "-n", "e2e", "--image=ghcr.io/acme/web:1.0")).To(ContainSubstring("pod/web created"))

		stderr := kubectlRefused("run", "bad", "-n", "e2e", "--image=docker.io/evil/miner:1")
		Expect(stderr).To(ContainSubstring(denyMessage))
		Expect(stderr).To(ContainSubstring(`spec.containers[0].image: image "docker.io/evil/miner:1" is not allowed by ClusterImagePolicy "e2e-trusted": it matches no pattern in images.allow`))
		Expect(run("get", "pod", "bad", "-n", "e2e").err).To(HaveOccurred(), "the refused Pod must not exist")
	})

	It("refuses kubectl create deployment with a disallowed image at once, naming the template field", func() {
		stderr := kubectlRefused("create", "deployment", "shady", "-n", "e2e", "--image=quay.io/shady/app:1")
		Expect(stderr).To(ContainSubstring(`admission webhook "workloads.imagegate.io" denied the request: `))
		Expect(stderr).To(ContainSubstring(`spec.template.spec.containers[0].image: image "quay.io/shady/app:1" is not allowed by ClusterImagePolicy "e2e-trusted": it matches no pattern in images.allow`))
		Expect(run("get", "deployment", "shady", "-n", "e2e").err).To(HaveOccurred())
	})

	It("still refuses the Pods the controller-manager creates for a Deployment admitted before a policy", func() {
		kubectl("create", "deployment", "legacy", "-n", "e2e", "--image=ghcr.io/acme/legacy:1", "--replicas=0")
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: no-legacy
  namespace: e2e
spec:
  images:
    deny: ["ghcr.io/acme/legacy"]
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "imagepolicy", "no-legacy", "-n", "e2e") })
		kubectl("wait", "--for=condition=Ready", "imagepolicy/no-legacy", "-n", "e2e", "--timeout=60s")
		Eventually(func() string {
			return run("run", "probe-legacy", "-n", "e2e", "--image=ghcr.io/acme/legacy:1", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(denyMessage))

		// Scaling is not a template change: the Deployment and ReplicaSet updates go through,
		// and the ReplicaSet's Pods are refused.
		kubectl("scale", "deployment", "legacy", "-n", "e2e", "--replicas=2")
		Eventually(func() string {
			return kubectl("get", "events", "-n", "e2e", "--field-selector=reason=FailedCreate",
				"-o=jsonpath={range .items[*]}{.involvedObject.kind} {.message}{\"\\n\"}{end}")
		}).WithTimeout(time.Minute).Should(And(
			ContainSubstring("ReplicaSet Error creating: "+denyMessage),
			ContainSubstring(`image "ghcr.io/acme/legacy:1" is not allowed by ImagePolicy "no-legacy"`)))
		Expect(kubectl("get", "pods", "-n", "e2e", "-l", "app=legacy", "-o=name")).To(BeEmpty())
	})

	It("refuses kubectl set image on a bare Pod and keeps the old image", func() {
		kubectl("run", "setimg", "-n", "e2e", "--image=ghcr.io/acme/app:1")
		stderr := kubectlRefused("set", "image", "pod/setimg", "-n", "e2e", "setimg=docker.io/evil/app:2")
		Expect(stderr).To(ContainSubstring(denyMessage))
		Expect(stderr).To(ContainSubstring(`image "docker.io/evil/app:2"`))
		Expect(kubectl("get", "pod", "setimg", "-n", "e2e", "-o=jsonpath={.spec.containers[0].image}")).To(Equal("ghcr.io/acme/app:1"))

		// An allowed image goes through the same path.
		kubectl("set", "image", "pod/setimg", "-n", "e2e", "setimg=ghcr.io/acme/app:2")
		Expect(kubectl("get", "pod", "setimg", "-n", "e2e", "-o=jsonpath={.spec.containers[0].image}")).To(Equal("ghcr.io/acme/app:2"))
	})

	It("refuses kubectl debug with a disallowed image (ephemeral container) and admits an allowed one", func() {
		kubectl("run", "target", "-n", "e2e", "--image=ghcr.io/acme/app:1")
		stderr := kubectlRefused("debug", "pod/target", "-n", "e2e", "--image=docker.io/library/busybox:1.36", "--container=dbg", "--attach=false")
		Expect(stderr).To(ContainSubstring(denyMessage))
		Expect(stderr).To(ContainSubstring(`spec.ephemeralContainers[0].image: image "docker.io/library/busybox:1.36"`))
		Expect(kubectl("get", "pod", "target", "-n", "e2e", "-o=jsonpath={.spec.ephemeralContainers}")).To(BeEmpty())

		kubectl("debug", "pod/target", "-n", "e2e", "--image=ghcr.io/acme/debug:1", "--container=dbg", "--attach=false")
		Expect(kubectl("get", "pod", "target", "-n", "e2e", "-o=jsonpath={.spec.ephemeralContainers[0].image}")).To(Equal("ghcr.io/acme/debug:1"))
	})

	It("prints a Warn-mode policy's warning in kubectl and admits the Pod", func() {
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: e2e-no-latest
spec:
  mode: Warn
  tags:
    deny: [latest]
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "clusterimagepolicy", "e2e-no-latest") })
		kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/e2e-no-latest", "--timeout=60s")
		Eventually(func() string {
			return run("run", "latest", "-n", "e2e", "--image=ghcr.io/acme/web:latest", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(
			`Warning: spec.containers[0].image: image "ghcr.io/acme/web:latest" is not allowed by ClusterImagePolicy "e2e-no-latest": its tag "latest" is in tags.deny`))
		r = run("run", "latest", "-n", "e2e", "--image=ghcr.io/acme/web:latest")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring("Warning: "))
		Expect(r.stdout).To(ContainSubstring("pod/latest created"))
	})

	It("takes a policy edit into account without a restart", func() {
		stderr := kubectlRefused("run", "partner", "-n", "e2e", "--image=registry.partner.example/tool:3")
		Expect(stderr).To(ContainSubstring(denyMessage))

		kubectl("patch", "clusterimagepolicy", "e2e-trusted", "--type=json",
			`-p=[{"op":"add","path":"/spec/images/allow/-","value":"registry.partner.example/*"}]`)
		Eventually(func() error {
			return run("run", "partner", "-n", "e2e", "--image=registry.partner.example/tool:3").err
		}).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(kubectl("get", "clusterimagepolicy", "e2e-trusted", "-o=jsonpath={.status.observedGeneration}")).To(Equal("2"))
	})

	It("applies an ImagePolicy only in its own namespace", func() {
		namespace("e2e-team")
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: pinned
  namespace: e2e-team
spec:
  requireDigest: true
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Eventually(func() string {
			return run("run", "t", "-n", "e2e-team", "--image=ghcr.io/acme/web:1", "--dry-run=server").stderr
		}).WithTimeout(30 * time.Second).Should(ContainSubstring(`is not allowed by ImagePolicy "pinned": it is not pinned by digest`))
		kubectl("run", "t", "-n", "e2e", "--image=ghcr.io/acme/web:1", "--dry-run=server")
	})

	It("gives the same verdict and message in bin/imagegate check as kubectl apply gets", func() {
		dir := GinkgoT().TempDir()
		policyFile := filepath.Join(dir, "policy.yaml")
		Expect(os.WriteFile(policyFile, []byte(kubectl("get", "clusterimagepolicy", "e2e-trusted", "-o=yaml")), 0o600)).To(Succeed())
		manifest := filepath.Join(dir, "deploy.yaml")
		Expect(os.WriteFile(manifest, []byte(`apiVersion: v1
kind: Pod
metadata:
  name: cli
  namespace: e2e
spec:
  containers:
  - name: app
    image: ghcr.io/acme/app:1
  - name: sidecar
    image: docker.io/partner/sidecar:2
`), 0o600)).To(Succeed())

		applyErr := kubectlRefused("apply", "-f", manifest)
		cmd := exec.Command(filepath.Join(root, "bin", "imagegate"), "check", "--policy", policyFile, manifest)
		out, err := cmd.Output()
		var exitErr *exec.ExitError
		Expect(errors.As(err, &exitErr)).To(BeTrue(), "imagegate check should exit 1: %v\n%s", err, out)
		Expect(exitErr.ExitCode()).To(Equal(1))
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		Expect(lines).To(HaveLen(2))
		prefix := manifest + "#1: Pod/e2e/cli: denied: "
		Expect(lines[0]).To(HavePrefix(prefix))
		// kubectl prints: Error from server (Forbidden): error when creating "...": admission
		// webhook "pods.imagegate.io" denied the request: <the engine's message>
		Expect(applyErr).To(ContainSubstring(denyMessage + ": " + strings.TrimPrefix(lines[0], prefix) + "\n"))
	})

	It("shows in kubectl get how many running Pods an Audit policy would refuse", func() {
		namespace("e2e-audit")
		for _, name := range []string{"one", "two", "three"} {
			kubectl("run", name, "-n", "e2e-audit", "--image=ghcr.io/acme/"+name+":latest")
		}
		kubectl("run", "pinned", "-n", "e2e-audit", "--image=ghcr.io/acme/pinned:1.0")
		r := apply(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: no-latest
  namespace: e2e-audit
spec:
  mode: Audit
  tags:
    deny: [latest]
`)
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		// The audit runs shortly after a policy change, and every --audit-interval.
		Eventually(func() string {
			return kubectl("get", "imagepolicy", "no-latest", "-n", "e2e-audit", "-o=custom-columns=NAME:.metadata.name,VIOLATIONS:.status.audit.violations", "--no-headers")
		}).WithTimeout(30 * time.Second).Should(MatchRegexp(`no-latest\s+3`))
		out := kubectl("get", "imagepolicy", "no-latest", "-n", "e2e-audit")
		Expect(out).To(MatchRegexp(`NAME\s+MODE\s+READY\s+VIOLATIONS\s+AGE`))
		Expect(out).To(MatchRegexp(`no-latest\s+Audit\s+True\s+3\s+`))
		Expect(kubectl("get", "imagepolicy", "no-latest", "-n", "e2e-audit", "-o=jsonpath={.status.audit.samples[*].pod}")).To(Equal("one three two"))
	})

	It("serves /healthz, /readyz and authenticated /metrics", func(ctx SpecContext) {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get(manager.HealthURL(path))
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Body.Close()).To(Succeed())
			Expect(resp.StatusCode).To(Equal(http.StatusOK), path)
		}

		// As Prometheus would: a ServiceAccount bound to config/rbac's metrics-reader role,
		// with a token from kubectl create token.
		kubectl("apply", "-f", filepath.Join(root, "config", "rbac", "metrics_reader_role.yaml"))
		kubectl("create", "serviceaccount", "prometheus", "-n", "e2e")
		kubectl("create", "clusterrolebinding", "e2e-prometheus", "--clusterrole=metrics-reader", "--serviceaccount=e2e:prometheus")
		DeferCleanup(func() { run("delete", "clusterrolebinding", "e2e-prometheus") })
		token := strings.TrimSpace(kubectl("create", "token", "prometheus", "-n", "e2e"))

		// The metrics server's certificate is self-signed by controller-runtime when no
		// certificate is given, as in config/default; Prometheus is set to skip verification.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
		}}
		get := func(bearer string) (int, string) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, manager.MetricsURL(), nil)
			Expect(err).NotTo(HaveOccurred())
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer)
			}
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			defer func() { _ = resp.Body.Close() }()
			var b strings.Builder
			_, err = io.Copy(&b, resp.Body)
			Expect(err).NotTo(HaveOccurred())
			return resp.StatusCode, b.String()
		}
		code, _ := get("")
		Expect(code).To(Equal(http.StatusUnauthorized))
		Eventually(func() int { c, _ := get(token); return c }).WithTimeout(30 * time.Second).Should(Equal(http.StatusOK))
		_, body := get(token)
		Expect(body).To(MatchRegexp(`controller_runtime_webhook_requests_total\{code="200",webhook="/validate-v1-pod"\} [1-9]`))
		Expect(body).To(MatchRegexp(`imagegate_admission_decisions_total\{decision="denied",endpoint="pod"\} [1-9]`))
		Expect(body).To(MatchRegexp(`imagegate_admission_decisions_total\{decision="denied",endpoint="workload"\} [1-9]`))
		Expect(body).To(MatchRegexp(`imagegate_policy_violations_total\{endpoint="pod",mode="Enforce",policy="ClusterImagePolicy/e2e-trusted"\} [1-9]`))
		Expect(body).To(MatchRegexp(`imagegate_evaluation_duration_seconds_count\{endpoint="pod"\} [1-9]`))
	})
})

var _ = Describe("when the manager is down", Ordered, func() {
	It("refuses Pods in covered namespaces with the apiserver's webhook error, and still admits kube-system", func(ctx SpecContext) {
		namespace("e2e-down")
		Expect(manager.Stop()).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(manager.Start(ctx)).To(Succeed()) })

		stderr := kubectlRefused("run", "any", "-n", "e2e-down", "--image=ghcr.io/acme/web:1")
		// The mutating webhook is called first, and fails the same way.
		Expect(stderr).To(MatchRegexp(`failed calling webhook "(pin\.)?pods\.imagegate\.io"`))
		Expect(run("get", "pod", "any", "-n", "e2e-down").err).To(HaveOccurred())

		// The webhook does not cover kube-system: the cluster can still repair itself.
		Eventually(func() error {
			return cluster.KubectlQuiet("get", "serviceaccount", "default", "-n", "kube-system")
		}).WithTimeout(time.Minute).Should(Succeed())
		kubectl("run", "repair", "-n", "kube-system", "--image=docker.io/evil/anything:1")
		kubectl("delete", "pod", "repair", "-n", "kube-system", "--wait=false")
	})
})
