package verify_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// A Pod's own pull secrets, and its ServiceAccount's, reach a private registry; without them
// the registry refuses.
func TestPodCredentials(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	reg.RequireBasicAuth("team", "pw")
	creds := registrytest.Basic("team", "pw")
	key, _ := registrytest.NewKey()
	img, err := registrytest.PushTo(reg.Host, "team/app", "1", creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(img, creds); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	pull := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "team"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.Host + `":{"username":"team","password":"pw"}}}`)},
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder", Namespace: "team"}, ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}}}
	pc := &verify.PodCredentials{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(pull, sa).Build()}

	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("private", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	d := snap.Evaluate(&policy.Subject{Namespace: "team", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img.String()}}})
	v := verify.New(verify.Options{})
	for _, c := range []struct {
		name           string
		serviceAccount string
		secrets        []corev1.LocalObjectReference
		want           string
	}{
		{"the Pod's imagePullSecrets", "default", []corev1.LocalObjectReference{{Name: "pull"}}, ""},
		{"its ServiceAccount's", "builder", nil, ""},
		{"none", "default", nil, "UNAUTHORIZED"},
		{"a Secret that does not exist", "default", []corev1.LocalObjectReference{{Name: "gone"}}, "UNAUTHORIZED"},
	} {
		ctx, err := pc.WithPod(context.Background(), "team", c.serviceAccount, c.secrets)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := v.Outcomes(ctx, d.Pending)[0].Reason
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestPodCredentialsResolve(t *testing.T) {
	reg := registrytest.New(true)
	defer reg.Close()
	reg.RequireBasicAuth("team", "pw")
	img, err := registrytest.PushTo(reg.Host, "team/app", "1", registrytest.Basic("team", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	pull := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "team"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.Host + `":{"username":"team","password":"pw"}}}`)},
	}
	pc := &verify.PodCredentials{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(pull).Build()}
	key, _ := registrytest.NewKey()
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("private", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
	d := snap.Evaluate(&policy.Subject{Namespace: "team", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: reg.Host + "/team/app:1"}}})
	v := verify.New(verify.Options{})
	if _, err := v.Resolve(context.Background(), &d.Unpinned[0]); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without credentials: %v", err)
	}
	ctx, err := pc.WithPod(context.Background(), "team", "default", []corev1.LocalObjectReference{{Name: "pull"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.Resolve(ctx, &d.Unpinned[0]); err != nil || got != img.DigestStr() {
		t.Errorf("with the Pod's credentials: %q, %v", got, err)
	}
}
