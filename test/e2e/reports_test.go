//go:build e2e

package e2e

import (
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// docs/reports.md through kubectl and the real manager (started with --reports and a short
// --audit-interval in BeforeSuite): the Report CRD the chart ships, a Report written by the
// audit and deleted when nothing is left, the preflight's warnings on a server dry run, and
// an AfterCleanAudit policy that waits for a clean pass before it refuses.
var _ = Describe("Reports and safe policy changes", Ordered, func() {
	const ns = "e2e-reports"
	policy := func(mode, extra string) string {
		return `apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: no-latest
  namespace: ` + ns + `
spec:
  mode: ` + mode + `
` + extra + `  tags:
    deny: [latest]
`
	}

	BeforeAll(func() {
		// As the chart does with reports.installCRDs: the Report CRD of reports-api.
		kubectl("apply", "-f", filepath.Join(root, "dist", "chart", "files", "openreports"))
		kubectl("wait", "--for=condition=Established", "crd/reports.openreports.io", "--timeout=60s")
		namespace(ns)
		kubectl("run", "web", "-n", ns, "--image=ghcr.io/acme/web:latest")
		kubectl("run", "pinned", "-n", ns, "--image=ghcr.io/acme/pinned:1.0")
	})

	It("writes one Report per namespace with the audit's results, and drops a deleted policy's", func() {
		r := apply(policy("Audit", ""))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Eventually(func() string {
			// Pass results depend on the cluster policies other specs left in force: only the
			// fail is this spec's.
			return run("get", "report", "imagegate", "-n", ns, "-o=jsonpath={.summary.fail}").stdout
		}).WithTimeout(60 * time.Second).Should(Equal("1"))
		Expect(kubectl("get", "report", "imagegate", "-n", ns, `-o=jsonpath={.results[?(@.policy=="`+ns+`/no-latest")].result}`)).To(And(ContainSubstring("fail"), ContainSubstring("pass")))
		Expect(kubectl("get", "report", "imagegate", "-n", ns, "-o=jsonpath={.source}")).To(Equal("imagegate"))
		Expect(kubectl("get", "report", "imagegate", "-n", ns, `-o=jsonpath={.results[?(@.result=="fail")].properties}`)).To(
			And(ContainSubstring(`"image":"ghcr.io/acme/web:latest"`), ContainSubstring(`"mode":"Audit"`), ContainSubstring(`"field":"spec.containers[0].image"`)))
		Expect(kubectl("get", "report", "imagegate", "-n", ns, `-o=jsonpath={.results[?(@.result=="fail")].rule}`)).To(Equal("tags.deny"))
		Expect(kubectl("get", "report", "imagegate", "-n", ns, `-o=jsonpath={.results[?(@.result=="fail")].policy}`)).To(Equal(ns + "/no-latest"))

		kubectl("delete", "imagepolicy", "no-latest", "-n", ns)
		// Cluster policies other specs left in force may still pass these Pods, so the Report
		// may stay: only this policy's results must go (the last spec sees it deleted).
		Eventually(func() string {
			return run("get", "report", "imagegate", "-n", ns, `-o=jsonpath={.results[?(@.policy=="`+ns+`/no-latest")].result}`).stdout
		}).WithTimeout(60 * time.Second).Should(BeEmpty())
	})

	It("lists with kubectl apply --dry-run=server the running Pods an Enforce change would refuse", func() {
		r := apply(policy("Audit", ""))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "imagepolicy", "no-latest", "-n", ns) })

		r = runIn([]byte(policy("Enforce", "")), "apply", "--dry-run=server", "-f", "-")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring(`Warning: ImagePolicy "no-latest" would refuse 1 of the 2 running Pods it covers at their next restart (` + ns + `: 1)`))
		Expect(r.stderr).To(ContainSubstring("Warning: would refuse " + ns + `/web: spec.containers[0].image: image "ghcr.io/acme/web:latest"`))
		Expect(r.stdout).To(ContainSubstring("(server dry run)"))
		// A dry run changes nothing.
		Expect(kubectl("get", "imagepolicy", "no-latest", "-n", ns, "-o=jsonpath={.spec.mode}")).To(Equal("Audit"))

		// A change that refuses nothing already running says so on a dry run only.
		r = runIn([]byte(`apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata:
  name: no-latest
  namespace: `+ns+`
spec:
  mode: Enforce
  tags:
    deny: [nightly]
`), "apply", "--dry-run=server", "-f", "-")
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		Expect(r.stderr).To(ContainSubstring(`would refuse none of the 2 running Pods it covers`))
	})

	It("keeps an AfterCleanAudit policy in Audit until a pass finds nothing to refuse, then enforces it", func() {
		r := apply(policy("Enforce", "  enforcement: AfterCleanAudit\n"))
		Expect(r.err).NotTo(HaveOccurred(), r.stderr)
		DeferCleanup(func() { run("delete", "imagepolicy", "no-latest", "-n", ns) })
		Expect(r.stderr).To(ContainSubstring("enforcement AfterCleanAudit: the policy acts as Audit"))

		Eventually(func() string {
			return run("get", "imagepolicy", "no-latest", "-n", ns, "-o=jsonpath={.status.enforcement.mode} {.status.enforcement.reason}").stdout
		}).WithTimeout(60 * time.Second).Should(Equal("Audit AwaitingCleanAudit"))
		Expect(kubectl("get", "imagepolicy", "no-latest", "-n", ns, "-o=wide")).To(MatchRegexp(`no-latest\s+Enforce\s+Audit\s+`))
		// Acting as Audit: a Pod it would refuse is admitted.
		kubectl("run", "web2", "-n", ns, "--image=ghcr.io/acme/web:latest")

		kubectl("delete", "pod", "web", "web2", "-n", ns, "--wait=false", "--grace-period=0", "--force")
		Eventually(func() string {
			return run("get", "imagepolicy", "no-latest", "-n", ns, "-o=jsonpath={.status.enforcement.mode} {.status.enforcement.reason}").stdout
		}).WithTimeout(90 * time.Second).Should(Equal("Enforce CleanAudit"))
		Expect(kubectlRefused("run", "web3", "-n", ns, "--image=ghcr.io/acme/web:latest")).To(
			ContainSubstring(`denied the request: spec.containers[0].image: image "ghcr.io/acme/web:latest"`))

		By("no Pod left in the namespace: its Report is deleted")
		kubectl("delete", "pod", "pinned", "-n", ns, "--wait=false", "--grace-period=0", "--force")
		Eventually(func() string {
			return run("get", "report", "imagegate", "-n", ns).stderr
		}).WithTimeout(60 * time.Second).Should(ContainSubstring("NotFound"))
	})
})
