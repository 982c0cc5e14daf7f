// Command demo shows imagegate at work on this machine: it starts a local control plane
// (etcd, kube-apiserver, kube-controller-manager) and the manager, registers the webhook from
// config/local, applies the CRDs and config/samples, and runs kubectl as a user would.
// `make demo` runs it; `make demo KEEP=1` leaves everything running until Ctrl-C.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/test/utils/localcluster"
	"github.com/imagegate/imagegate/test/utils/notationtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

func main() {
	var root, binDir, manager, nodeDir string
	var keep bool
	flag.StringVar(&root, "root", ".", "The repository's root folder (config/ is read from there).")
	flag.StringVar(&binDir, "bin-dir", "", "Folder with etcd, kube-apiserver, kube-controller-manager and kubectl (make setup-envtest prints it).")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.StringVar(&nodeDir, "node-dir", "", "Folder with containerd, runc, the kubelet, kube-scheduler and the CNI plugins (make setup-node prints it); empty: no node, and Pods stay Pending.")
	flag.BoolVar(&keep, "keep", false, "Leave the cluster and the manager running until Ctrl-C.")
	flag.Parse()
	if binDir == "" {
		fmt.Fprintln(os.Stderr, "demo: --bin-dir is required (make demo sets it)")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, root, binDir, manager, nodeDir, keep)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, root, binDir, manager, nodeDir string, keep bool) (err error) {
	step("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager)")
	// The apiserver presents a client certificate to the webhooks, and the manager admits no
	// other caller (docs/install.md, "Authenticating the apiserver").
	webhookPort, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	authDir, err := os.MkdirTemp("", "imagegate-demo-auth-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(authDir) }()
	auth, err := localcluster.WebhookClientAuth(authDir, webhookPort)
	if err != nil {
		return err
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		BinDir:             binDir,
		ExtraAPIServerArgs: []string{auth.APIServerArg},
		Progress:           func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the manager and the control plane")
		if stopErr := cluster.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	d := &demo{cluster: cluster, ctx: ctx}

	// Every image the demo runs comes from a registry on this machine (in process, no
	// Docker); with a node, containerd pulls every registry host's images from it.
	reg := registrytest.New(true)
	defer reg.Close()
	if err := d.startNode(reg, nodeDir); err != nil {
		return err
	}
	if d.node != nil {
		defer func() {
			step("Stopping the node")
			if stopErr := d.node.Stop(); stopErr != nil && err == nil {
				err = stopErr
			}
		}()
	}

	step("Installing the CRDs")
	if err := d.kubectl("apply", "-f", filepath.Join(root, "config/crd/bases")); err != nil {
		return err
	}
	if err := d.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		return err
	}

	step("Starting the manager (bin/manager) with a serving certificate from the local CA, admitting only the apiserver's client certificate")
	// The audit runs every 10s here (default 5m), so that the demo can show it at work.
	mgr, err := cluster.StartManager(ctx, localcluster.ManagerOptions{
		Binary: filepath.Join(root, manager), WebhookPort: webhookPort,
		Args: []string{"--audit-interval=10s", auth.ManagerArg},
	})
	if err != nil {
		return err
	}
	fmt.Printf("    webhook https://127.0.0.1:%d, probes http://127.0.0.1:%d, log %s\n",
		mgr.WebhookPort, mgr.HealthPort, filepath.Join(cluster.Dir, "manager.log"))
	if err := refusedWithoutCertificate(cluster, webhookPort); err != nil {
		return err
	}

	step("Registering the webhook from config/local (config/webhook with a loopback URL)")
	if err := mgr.RegisterWebhook(root); err != nil {
		return err
	}
	if err := d.kubectl("get", "validatingwebhookconfigurations"); err != nil {
		return err
	}

	step("A Deployment from before any policy, scaled to zero")
	if err := d.kubectl("create", "deployment", "legacy", "--image=quay.io/legacy/app:1", "--replicas=0"); err != nil {
		return err
	}

	step("Applying the sample policies (config/samples)")
	if err := d.kubectl("apply", "-k", filepath.Join(root, "config/samples")); err != nil {
		return err
	}
	if err := d.kubectl("wait", "--for=condition=Ready", "clusterimagepolicy", "--all", "--timeout=60s"); err != nil {
		return err
	}
	if err := d.kubectl("get", "clusterimagepolicies"); err != nil {
		return err
	}

	step("A Pod from the acme organization's registry is admitted")
	if err := d.kubectl("run", "web", "--image=ghcr.io/acme/web:1.4.2"); err != nil {
		return err
	}

	step("A Pod from an unknown Docker Hub user is denied, with the image, the policy and the rule")
	if err := d.kubectlFails("run", "miner", "--image=docker.io/cryptominer/xmrig:6.21"); err != nil {
		return err
	}

	step("An official image at :latest is admitted, and the Warn-mode policy no-latest prints a warning")
	if err := d.kubectl("run", "cache", "--image=redis:latest"); err != nil {
		return err
	}

	step("In a namespace labelled env=production, images must be pinned by digest")
	if err := d.kubectl("create", "namespace", "shop"); err != nil {
		return err
	}
	if err := d.kubectl("label", "namespace", "shop", "env=production"); err != nil {
		return err
	}
	if err := d.waitQuiet("the default ServiceAccount in shop", "get", "serviceaccount", "default", "-n", "shop"); err != nil {
		return err
	}
	if err := d.kubectlFails("run", "api", "-n", "shop", "--image=ghcr.io/acme/api:2.0"); err != nil {
		return err
	}
	if err := d.kubectl("run", "api", "-n", "shop", "--image=ghcr.io/acme/api@"+d.shopDigest); err != nil {
		return err
	}

	step("A Deployment with a disallowed image is refused at kubectl apply, naming the template field")
	if err := d.kubectlFails("create", "deployment", "shady", "--image=quay.io/shady/app:1"); err != nil {
		return err
	}

	step("Scaling up the Deployment from before the policies: its ReplicaSet cannot create the Pods")
	if err := d.kubectl("scale", "deployment", "legacy", "--replicas=2"); err != nil {
		return err
	}
	fmt.Println("    waiting for the ReplicaSet controller to try...")
	if err := d.waitQuiet("a FailedCreate event", "get", "events", "--field-selector=reason=FailedCreate",
		"-o=jsonpath={.items[0].message}"); err != nil {
		return err
	}
	if err := d.kubectl("get", "events", "--field-selector=reason=FailedCreate",
		"-o=custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message"); err != nil {
		return err
	}

	if err := d.exception(); err != nil {
		return err
	}

	key, err := registrytest.NewKey()
	if err != nil {
		return err
	}
	if err := d.signatures(reg, key); err != nil {
		return err
	}
	if err := d.notation(reg); err != nil {
		return err
	}
	if err := d.vulnerabilities(reg, key); err != nil {
		return err
	}
	if err := d.provenance(reg, key); err != nil {
		return err
	}

	if d.node == nil {
		step("What was admitted (no node here, so the Pods stay Pending)")
		if err := d.kubectl("get", "pods", "-A", "-o=custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,IMAGE:.spec.containers[0].image"); err != nil {
			return err
		}
	} else {
		step("What was admitted runs: containerd pulled each image as the Pod names it, and the kubelet reports the digest it runs")
		if err := d.kubectl("wait", "--for=condition=Ready", "--timeout=120s", "pod", "web", "cache", "appliance", "payments", "ledger", "api", "storefront"); err != nil {
			return err
		}
		if err := d.kubectl("wait", "--for=condition=Ready", "--timeout=120s", "pod", "api", "-n", "shop"); err != nil {
			return err
		}
		if err := d.kubectl("get", "pods", "-A", "-o=custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,STATUS:.status.phase,NODE:.spec.nodeName,IMAGE:.spec.containers[0].image,IMAGE ID:.status.containerStatuses[0].imageID"); err != nil {
			return err
		}
	}

	if !keep {
		fmt.Println("\nRun `make demo KEEP=1` to keep the cluster and try your own policies with kubectl.")
		return nil
	}
	step("The cluster stays up. In another terminal:")
	fmt.Printf("\n    export KUBECONFIG=%s\n    kubectl get clusterimagepolicies\n    kubectl run test --image=docker.io/someone/else:1.0\n\n", cluster.Kubeconfig)
	fmt.Printf("    Logs are in %s. Press Ctrl-C to stop everything.\n", cluster.Dir)
	<-ctx.Done()
	return nil
}

// signatures shows verify rules: a registry on this machine (go-containerregistry's, in this
// process: no Docker), images signed as cosign signs them, a policy that requires the
// signature, and the Pods that come out pinned or refused.
func (d *demo) signatures(reg *registrytest.Registry, key *registrytest.Key) error {
	step("Verifying signatures: a local OCI registry (in process, no Docker) with small generated images")
	push := func(repo, tag string, signed bool) error {
		dg, err := reg.Push(repo, tag)
		if err != nil {
			return err
		}
		what := "unsigned"
		if signed {
			what = "signed with the release key (a sigstore bundle, as cosign v3 signs)"
			if err := key.Sign(dg); err != nil {
				return err
			}
		}
		fmt.Printf("    pushed %s:%s (%s), %s\n", dg.Context(), tag, dg.DigestStr()[:19], what)
		return nil
	}
	for _, p := range []struct {
		repo, tag string
		signed    bool
	}{{"acme/payments", "1.0", true}, {"acme/batch", "1.0", false}, {"acme/payments", "1.1", true}} {
		if err := push(p.repo, p.tag, p.signed); err != nil {
			return err
		}
	}
	fmt.Println("    and then moved the tag acme/payments:1.1 to other, unsigned content:")
	if err := push("acme/payments", "1.1", false); err != nil {
		return err
	}

	step("The public key goes into a Secret in imagegate's namespace; the policy names it")
	dir, err := os.MkdirTemp("", "imagegate-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	keyFile := filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(keyFile, []byte(key.PublicKeyPEM()), 0o600); err != nil {
		return err
	}
	if err := d.kubectl("create", "namespace", "imagegate-system"); err != nil {
		return err
	}
	if err := d.kubectl("create", "secret", "generic", "release-key", "-n", "imagegate-system", "--from-file=cosign.pub="+keyFile); err != nil {
		return err
	}
	if err := d.kubectl("patch", "clusterimagepolicy", "trusted-registries", "--type=json",
		`-p=[{"op":"add","path":"/spec/images/allow/-","value":"`+reg.Host+`/**"}]`); err != nil {
		return err
	}
	policyFile := filepath.Join(dir, "signed-images.yaml")
	policy := `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: signed-images
spec:
  verify:
    images: ["` + reg.Host + `/acme/**"]
    signers:
    - name: release
      key:
        secretRef: {name: release-key}
    transparencyLog: Skip   # keys without a transparency log: a private deployment
`
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		return err
	}
	fmt.Print("    " + strings.ReplaceAll(strings.TrimSpace(policy), "\n", "\n    ") + "\n")
	if err := d.kubectl("apply", "-f", policyFile); err != nil {
		return err
	}
	if err := d.kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/signed-images", "--timeout=60s"); err != nil {
		return err
	}

	step("The signed image is admitted, and the Pod is pinned to the digest that was verified")
	if err := d.kubectl("run", "payments", "--image="+reg.Host+"/acme/payments:1.0"); err != nil {
		return err
	}
	if err := d.kubectl("get", "pod", "payments", "-o=jsonpath={.spec.containers[0].image}{\"\\n\"}"); err != nil {
		return err
	}

	step("The unsigned image is refused, saying what was tried")
	if err := d.kubectlFails("run", "batch", "--image="+reg.Host+"/acme/batch:1.0"); err != nil {
		return err
	}

	step("The tag moved after signing: what it names now is not signed, so it is refused")
	return d.kubectlFails("run", "payments-next", "--image="+reg.Host+"/acme/payments:1.1")
}

// notation shows Notary Project signatures: a test CA generated here, an image signed with
// notation-go as `notation sign` signs it (a JWS envelope as an OCI referrer), a notation
// signer trusting the CA from a ConfigMap, and a signature by another CA refused.
func (d *demo) notation(reg *registrytest.Registry) error {
	step("Notation signatures (AWS Signer, Azure Key Vault, your CA): a test CA, and images signed with notation-go")
	ca, err := notationtest.NewCA("Acme Release CA")
	if err != nil {
		return err
	}
	rogue, err := notationtest.NewCA("Acme Release CA")
	if err != nil {
		return err
	}
	now := time.Now()
	for _, im := range []struct {
		tag, what string
		ca        *notationtest.CA
	}{{"2.0", "signed by Acme Release CA's certificate CN=release", ca}, {"2.0-forged", "signed by another CA with the same name", rogue}} {
		s, err := im.ca.Issue("release", now.Add(-time.Hour), now.Add(24*time.Hour))
		if err != nil {
			return err
		}
		dg, err := reg.Push("notary/ledger", im.tag)
		if err != nil {
			return err
		}
		if err := s.SignWithNotation(context.Background(), dg, notationtest.JWS); err != nil {
			return err
		}
		fmt.Printf("    pushed %s:%s (%s), %s\n", dg.Context(), im.tag, dg.DigestStr()[:19], im.what)
	}
	dir, err := os.MkdirTemp("", "imagegate-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte(ca.PEM()), 0o600); err != nil {
		return err
	}
	step("The CA's root goes into a ConfigMap (Notation's trust store); the policy is one trust policy statement")
	if err := d.kubectl("create", "configmap", "acme-release-ca", "-n", "imagegate-system", "--from-file=ca.crt="+caFile); err != nil {
		return err
	}
	policy := `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: notation-signed
spec:
  verify:
    images: ["` + reg.Host + `/notary/ledger"]
    signers:
    - name: acme-release
      notation:
        trustStores:
        - {type: ca, name: acme-release-ca, configMapRef: {name: acme-release-ca}}
        trustedIdentities: ["x509.subject: ` + notationtest.Subject("release") + `"]
`
	policyFile := filepath.Join(dir, "notation-signed.yaml")
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		return err
	}
	fmt.Print("    " + strings.ReplaceAll(strings.TrimSpace(policy), "\n", "\n    ") + "\n")
	if err := d.kubectl("apply", "-f", policyFile); err != nil {
		return err
	}
	if err := d.kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/notation-signed", "--timeout=60s"); err != nil {
		return err
	}
	step("The Notation-signed image is admitted and pinned to the digest that was verified")
	if err := d.kubectl("run", "ledger", "--image="+reg.Host+"/notary/ledger:2.0"); err != nil {
		return err
	}
	if err := d.kubectl("get", "pod", "ledger", "-o=jsonpath={.spec.containers[0].image}{\"\\n\"}"); err != nil {
		return err
	}
	step("The image signed by another CA is refused, saying what was tried")
	return d.kubectlFails("run", "ledger-forged", "--image="+reg.Host+"/notary/ledger:2.0-forged")
}

// provenance shows provenance rules: two images attested with SLSA provenance as GitHub's
// actions/attest-build-provenance writes it, one built by the release workflow of the right
// repository at a tag, one by the same workflow in another repository.
func (d *demo) provenance(reg *registrytest.Registry, key *registrytest.Key) error {
	step("Provenance: images attested with SLSA provenance v1, as GitHub's attest-build-provenance writes it")
	for _, im := range []struct {
		tag   string
		build registrytest.Build
		what  string
	}{
		{"v1.4.0", registrytest.Build{Repository: "https://github.com/acme/api", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.4.0", Event: "push"}, "built by acme/api's release workflow at refs/tags/v1.4.0"},
		{"v1.4.0-fork", registrytest.Build{Repository: "https://github.com/mallory/api", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.4.0", Event: "push"}, "built by the same workflow in a fork, mallory/api"},
	} {
		dg, err := reg.Push("acme/api", im.tag)
		if err != nil {
			return err
		}
		if err := key.Sign(dg); err != nil {
			return err
		}
		if err := key.Attest(dg, registrytest.AttestationStatement(dg, registrytest.SLSAProvenanceV1, registrytest.GitHubProvenance(im.build))); err != nil {
			return err
		}
		fmt.Printf("    pushed %s:%s, signed and attested: %s\n", dg.Context(), im.tag, im.what)
	}
	dir, err := os.MkdirTemp("", "imagegate-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	policyFile := filepath.Join(dir, "built-by-release.yaml")
	policy := `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: built-by-release
spec:
  verify:
    images: ["` + reg.Host + `/acme/api"]
    signers:
    - name: release
      key:
        secretRef: {name: release-key}
    transparencyLog: Skip
    attestations:
    - name: provenance
      predicateType: https://slsa.dev/provenance/v1
      provenance:
        builderID: https://github.com/acme/api/.github/workflows/release.yml@refs/tags/*
        sourceRepository: https://github.com/acme/api
        sourceRef: refs/tags/v*
      conditions:
      - expression: predicate.buildDefinition.internalParameters.github.runner_environment == 'github-hosted'
        message: must be built on GitHub-hosted runners
`
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		return err
	}
	fmt.Print("    " + strings.ReplaceAll(strings.TrimSpace(policy), "\n", "\n    ") + "\n")
	if err := d.kubectl("apply", "-f", policyFile); err != nil {
		return err
	}
	if err := d.kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/built-by-release", "--timeout=60s"); err != nil {
		return err
	}
	step("The image built by the release workflow of acme/api at a tag is admitted")
	if err := d.kubectl("run", "api", "--image="+reg.Host+"/acme/api:v1.4.0"); err != nil {
		return err
	}
	step("The image built from another repository is refused, naming the field and both values")
	return d.kubectlFails("run", "api-fork", "--image="+reg.Host+"/acme/api:v1.4.0-fork")
}

// vulnerabilities shows attestation rules: images signed and attested with vulnerability
// scans in Trivy's format (what `trivy image --format cosign-vuln` and `cosign attest --type
// vuln` put in a registry), a policy that limits findings and scan age, and the audit
// reporting a running Pod whose scan aged past maxAge.
func (d *demo) vulnerabilities(reg *registrytest.Registry, key *registrytest.Key) error {
	step("Vulnerability gates: images signed and attested with Trivy scans (cosign's vuln/v1 predicate)")
	now := time.Now().UTC().Truncate(time.Second)
	for _, im := range []struct {
		tag      string
		finished time.Time
		vulns    []registrytest.Vuln
		what     string
	}{
		{"clean", now.Add(-20 * time.Second), []registrytest.Vuln{{ID: "CVE-2026-3333", Severity: "LOW"}}, "one Low finding, scanned 20s ago"},
		{"critical", now, []registrytest.Vuln{{ID: "CVE-2026-1111", Severity: "CRITICAL"}, {ID: "CVE-2026-2222", Severity: "CRITICAL"}, {ID: "CVE-2026-4444", Severity: "HIGH"}}, "two Critical findings and a High one"},
		{"stale", now.Add(-72 * time.Hour), nil, "clean, but scanned 3 days ago"},
		{"vexed", now.Add(-20 * time.Second), []registrytest.Vuln{{ID: "CVE-2026-5555", Severity: "CRITICAL"}}, "one Critical finding, and a signed OpenVEX statement: not_affected"},
	} {
		dg, err := reg.Push("acme/web", im.tag)
		if err != nil {
			return err
		}
		if err := key.Sign(dg); err != nil {
			return err
		}
		if err := key.Attest(dg, registrytest.AttestationStatement(dg, registrytest.CosignVuln, registrytest.TrivyPredicate(im.finished, im.vulns...))); err != nil {
			return err
		}
		if im.tag == "vexed" {
			// As `vexctl attest` does: the supplier says the vulnerable code is never run.
			doc := registrytest.OpenVEX("https://acme.example/vex/web-2026-12", now, registrytest.VEXStatement{
				Vulnerability: "CVE-2026-5555", Product: dg.String(), Status: "not_affected", Justification: "vulnerable_code_not_in_execute_path",
			})
			if err := key.Attest(dg, registrytest.AttestationStatement(dg, registrytest.OpenVEXType, doc)); err != nil {
				return err
			}
		}
		fmt.Printf("    pushed %s:%s, signed and attested: %s\n", dg.Context(), im.tag, im.what)
	}
	dir, err := os.MkdirTemp("", "imagegate-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	policyFile := filepath.Join(dir, "no-criticals.yaml")
	policy := `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: no-criticals
spec:
  verify:
    images: ["` + reg.Host + `/acme/web"]
    signers:
    - name: release
      key:
        secretRef: {name: release-key}
    transparencyLog: Skip
    attestations:
    - name: trivy-scan
      predicateType: https://cosign.sigstore.dev/attestation/vuln/v1
      vulnerabilities:
        maxSeverity: High
        maxAgeSeconds: 60   # a demo's; 86400 (a day) or 604800 (a week) in a real cluster
        scanners: ["pkg:github/aquasecurity/trivy"]
        vex:
          signers: [release]   # whose OpenVEX statements count (a supplier's key, or yours)
`
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		return err
	}
	fmt.Print("    " + strings.ReplaceAll(strings.TrimSpace(policy), "\n", "\n    ") + "\n")
	if err := d.kubectl("apply", "-f", policyFile); err != nil {
		return err
	}
	if err := d.kubectl("wait", "--for=condition=Ready", "clusterimagepolicy/no-criticals", "--timeout=60s"); err != nil {
		return err
	}

	step("The image with a clean (Low only) scan is admitted, pinned to the digest that was verified")
	if err := d.kubectl("run", "storefront", "--image="+reg.Host+"/acme/web:clean"); err != nil {
		return err
	}
	step("The image with Critical findings is refused, with their IDs")
	if err := d.kubectlFails("run", "storefront-critical", "--image="+reg.Host+"/acme/web:critical"); err != nil {
		return err
	}
	step("The image whose newest scan is older than maxAge is refused")
	if err := d.kubectlFails("run", "storefront-stale", "--image="+reg.Host+"/acme/web:stale"); err != nil {
		return err
	}
	step("The image whose Critical finding a signed VEX statement rules out (not_affected) is admitted")
	if err := d.kubectl("run", "storefront-vexed", "--image="+reg.Host+"/acme/web:vexed"); err != nil {
		return err
	}
	// Gone again: the audit below follows one running Pod, storefront.
	if err := d.kubectl("delete", "pod", "storefront-vexed", "--wait=false"); err != nil {
		return err
	}

	if d.node != nil {
		step("The admitted Pod runs: the kubelet reports the digest containerd pulled, which the audit re-verifies")
		if err := d.kubectl("wait", "--for=condition=Ready", "pod/storefront", "--timeout=120s"); err != nil {
			return err
		}
		if err := d.kubectl("get", "pod", "storefront", "-o=jsonpath={.status.phase} {.status.containerStatuses[0].imageID}{\"\\n\"}"); err != nil {
			return err
		}
	} else {
		step("The admitted Pod runs (no node here: the demo writes the status a kubelet would, with the digest the runtime pulled)")
		out, err := d.cluster.Kubectl("get", "pod", "storefront", "-o=jsonpath={.spec.containers[0].image}").Output()
		if err != nil {
			return err
		}
		image := string(out)
		_, digest, _ := strings.Cut(image, "@")
		status := fmt.Sprintf(`{"status":{"phase":"Running","containerStatuses":[{"name":"storefront","image":%q,"imageID":%q,"ready":true,"restartCount":0,"state":{"running":{}}}]}}`,
			image, reg.Host+"/acme/web@"+digest)
		if err := d.kubectl("patch", "pod", "storefront", "--subresource=status", "--type=merge", "-p="+status); err != nil {
			return err
		}
	}
	if err := d.waitQuiet("the first audit of no-criticals", "get", "clusterimagepolicy", "no-criticals", "-o=jsonpath={.status.audit.lastScanTime}"); err != nil {
		return err
	}
	if err := d.kubectl("get", "clusterimagepolicy", "no-criticals"); err != nil {
		return err
	}
	expires := now.Add(-20 * time.Second).Add(time.Minute)
	fmt.Printf("    its scan reaches maxAge at %s; the audit (every 10s in this demo) re-checks what runs...\n", expires.Format(time.RFC3339))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _ := d.cluster.Kubectl("get", "clusterimagepolicy", "no-criticals", "-o=jsonpath={.status.audit.violations}").Output()
		if strings.TrimSpace(string(out)) == "1" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the audit did not report the running Pod whose scan expired")
		}
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	step("The audit reports the running Pod whose scan expired, with an Event on the Pod")
	if err := d.kubectl("get", "clusterimagepolicy", "no-criticals"); err != nil {
		return err
	}
	if err := d.kubectl("get", "clusterimagepolicy", "no-criticals", "-o=jsonpath={.status.audit.samples}{\"\\n\"}"); err != nil {
		return err
	}
	if err := d.waitQuiet("the RunningImageRefused event", "get", "events", "--field-selector=reason=RunningImageRefused", "-o=jsonpath={.items[0].message}"); err != nil {
		return err
	}
	return d.kubectl("get", "events", "--field-selector=reason=RunningImageRefused",
		"-o=custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message")
}

// exception shows an ImagePolicyException: a vendor image the policies refuse, exempted with
// a reason and an expiry, admitted with a warning that names both.
func (d *demo) exception() error {
	step("A vendor's image from an unapproved registry is refused")
	if err := d.kubectlFails("run", "appliance", "--image=docker.io/vendor/appliance:5.2"); err != nil {
		return err
	}
	step("An ImagePolicyException exempts it, in this namespace, from that one rule, for 30 days (only those granted the imagegate-imagepolicyexception-granter-role may create one)")
	expires := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Hour).Format(time.RFC3339)
	exception := `apiVersion: imagegate.io/v1alpha1
kind: ImagePolicyException
metadata:
  name: vendor-appliance
  namespace: default
spec:
  reason: "Vendor appliance, published on Docker Hub only; mirror due in Q1 (TICKET-123)"
  expiresAt: "` + expires + `"
  images: ["docker.io/vendor/appliance"]
  policies:
  - kind: ClusterImagePolicy
    name: trusted-registries
    rules: [images.allow]
`
	dir, err := os.MkdirTemp("", "imagegate-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	file := filepath.Join(dir, "vendor-appliance.yaml")
	if err := os.WriteFile(file, []byte(exception), 0o600); err != nil {
		return err
	}
	fmt.Print("    " + strings.ReplaceAll(strings.TrimSpace(exception), "\n", "\n    ") + "\n")
	if err := d.kubectl("apply", "-f", file); err != nil {
		return err
	}
	step("Now it is admitted, with a warning naming the exception and its expiry")
	if err := d.kubectl("run", "appliance", "--image=docker.io/vendor/appliance:5.2"); err != nil {
		return err
	}
	if err := d.waitQuiet("the exception's status", "get", "imagepolicyexception", "vendor-appliance", "-o=jsonpath={.status.conditions[0].status}"); err != nil {
		return err
	}
	return d.kubectl("get", "imagepolicyexceptions")
}

type demo struct {
	cluster *localcluster.Cluster
	ctx     context.Context
	// node runs the admitted Pods; nil without one (they stay Pending).
	node *localcluster.Node
	// shopDigest is the digest of ghcr.io/acme/api that the shop namespace runs.
	shopDigest string
}

// fakeShopDigest names ghcr.io/acme/api in the shop namespace when no node runs it.
const fakeShopDigest = "sha256:0b4f5d6c7a8e9f00112233445566778899aabbccddeeff00112233445566778f"

// startNode starts a node (kube-scheduler, containerd, runc, a kubelet) when nodeDir holds
// one, with images of the pause program in reg under every name the demo runs. Where a node
// cannot run (not root, not Linux, binaries missing), it says why and the demo goes on with
// Pods that stay Pending.
func (d *demo) startNode(reg *registrytest.Registry, nodeDir string) error {
	d.shopDigest = fakeShopDigest
	if nodeDir == "" {
		fmt.Println("    no node (it runs containers, so make demo starts one only as root on Linux): the admitted Pods will stay Pending")
		return nil
	}
	step("Starting a node: kube-scheduler, containerd and runc, and a kubelet, in their own PID and mount namespaces")
	reg.Program = filepath.Join(nodeDir, "pause")
	sandbox, err := reg.Push("imagegate/pause", "1")
	if err != nil {
		return err
	}
	// The images that the demo's Pods name on public registries: containerd asks this
	// registry for them (hosts.toml), as a pull-through mirror would serve them.
	for _, im := range []string{"acme/web:1.4.2", "library/redis:latest", "vendor/appliance:5.2", "acme/api:2.0"} {
		repo, tag, _ := strings.Cut(im, ":")
		dg, err := reg.Push(repo, tag)
		if err != nil {
			return err
		}
		if repo == "acme/api" {
			d.shopDigest = dg.DigestStr()
		}
	}
	node, err := d.cluster.StartNode(d.ctx, localcluster.NodeOptions{
		BinDir: nodeDir, Registry: reg.Host, SandboxImage: sandbox.String(),
		Progress: func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) },
	})
	if err != nil {
		reg.Program = ""
		d.shopDigest = fakeShopDigest
		fmt.Printf("    the node did not start, so the admitted Pods will stay Pending:\n    %v\n", err)
		return nil
	}
	d.node = node
	return d.kubectl("get", "nodes", "-o=wide")
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

// refusedWithoutCertificate shows that a caller other than the apiserver, trusting the
// webhook's certificate but presenting none of its own, gets no decision.
func refusedWithoutCertificate(cluster *localcluster.Cluster, port int) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cluster.CA.CertPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/validate-v1-pod", port)
	fmt.Printf("$ curl --cacert ca.crt -X POST %s   # without the apiserver's client certificate\n", url)
	resp, err := client.Post(url, "application/json", strings.NewReader("{}"))
	if err == nil {
		_ = resp.Body.Close()
		return fmt.Errorf("a caller without a client certificate got an answer (%s)", resp.Status)
	}
	fmt.Printf("  refused at the TLS handshake: %v\n", err)
	return nil
}

// kubectl runs kubectl, showing the command and its output as a terminal would.
func (d *demo) kubectl(args ...string) error {
	out, err := d.show(args)
	if err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// kubectlFails runs kubectl and expects it to be refused.
func (d *demo) kubectlFails(args ...string) error {
	if _, err := d.show(args); err == nil {
		return fmt.Errorf("kubectl %s succeeded; the webhook should have refused it", strings.Join(args, " "))
	}
	return nil
}

func (d *demo) show(args []string) (string, error) {
	fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
	cmd := d.cluster.Kubectl(args...)
	out, err := cmd.CombinedOutput()
	if d.ctx.Err() != nil {
		return string(out), d.ctx.Err()
	}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		fmt.Println("  " + line)
	}
	return string(out), err
}

// waitQuiet retries a kubectl command until it succeeds with output, for up to a minute.
func (d *demo) waitQuiet(what string, args ...string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := d.cluster.Kubectl(args...).Output()
		if err == nil && len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
