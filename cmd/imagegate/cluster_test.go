package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/check"
)

// --cluster checks against what a real apiserver holds: its policies and its Namespaces'
// labels; a policy in the --policy files replaces the cluster's of the same name; a context
// that cannot be reached is bad input with a message that says so.
func TestClusterPolicies(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs KUBEBUILDER_ASSETS (make test sets it)")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &v1alpha1.ClusterImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "trusted"},
		Spec: v1alpha1.ImagePolicySpec{Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{"ghcr.io/acme/**"}}}}); err != nil {
		t.Fatal(err)
	}
	admin, err := env.AddUser(envtest.User{Name: "ci", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := write(t, dir, "kubeconfig", string(kc))
	bad := write(t, dir, "bad.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "quay.io/evil/app:1"))

	code, stdout, stderr := imagegate(t, "", "check", "--cluster", "--kubeconfig", kubeconfig, bad)
	if code != check.ExitDenied || !strings.Contains(stdout, `is not allowed by ClusterImagePolicy "trusted": it matches no pattern in images.allow`) {
		t.Errorf("the cluster's policy: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	looser := write(t, dir, "trusted.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata: {name: trusted}
spec: {images: {allow: ["ghcr.io/acme/**", "quay.io/evil/**"]}}
`)
	code, stdout, stderr = imagegate(t, "", "check", "--cluster", "--kubeconfig", kubeconfig, "--policy", looser, bad)
	if code != check.ExitAdmitted || !strings.Contains(stderr, "ClusterImagePolicy/trusted is replaced by the one in the --policy files") {
		t.Errorf("a change under review: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	// What runs now: a Pod started before the policy, judged without any manifest.
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	miner := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "miner"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "quay.io/evil/app:1"}}}}
	if err := c.Create(ctx, miner); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = imagegate(t, "", "check", "--offline", "--cluster", "--running", "--kubeconfig", kubeconfig)
	if code != check.ExitDenied || !strings.Contains(stdout, "Pod/default/miner") || !strings.Contains(stdout, `image "quay.io/evil/app:1" (quay.io/evil/app:1) is not allowed by ClusterImagePolicy "trusted"`) && !strings.Contains(stdout, `image "quay.io/evil/app:1" is not allowed by ClusterImagePolicy "trusted"`) {
		t.Errorf("the running Pods: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, stderr = imagegate(t, "", "check", "--offline", "--cluster", "--running", "--kubeconfig", kubeconfig, "--policy", looser)
	if code != check.ExitAdmitted {
		t.Errorf("the running Pods under the looser policy: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, _, stderr = imagegate(t, "", "check", "--running")
	if code == 0 || !strings.Contains(stderr, "--running reads the cluster's Pods: it needs --cluster") {
		t.Errorf("--running without --cluster: exit %d\n%s", code, stderr)
	}

	unreachable := write(t, dir, "unreachable", regexp.MustCompile(`server: \S+`).ReplaceAllString(string(kc), "server: https://127.0.0.1:1"))
	code, _, stderr = imagegate(t, "", "check", "--cluster", "--kubeconfig", unreachable, bad)
	if code != check.ExitBadInput || !strings.Contains(stderr, "reading the ClusterImagePolicy objects of cluster") {
		t.Errorf("an unreachable cluster: exit %d\n%s", code, stderr)
	}
}
