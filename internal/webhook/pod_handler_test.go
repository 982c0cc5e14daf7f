package webhook

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

type fixedSnapshot struct{ s *policy.Snapshot }

func (f fixedSnapshot) Snapshot() *policy.Snapshot { return f.s }

func newTestValidator(t *testing.T, snap *policy.Snapshot) *PodValidator {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return NewPodValidator(fixedSnapshot{snap}, fake.NewClientBuilder().WithScheme(scheme).Build(), nil)
}

func request(op admissionv1.Operation, resource, sub string, object, old string) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Operation: op, Namespace: "team-a", SubResource: sub,
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: resource},
		Object:    runtime.RawExtension{Raw: []byte(object)},
		OldObject: runtime.RawExtension{Raw: []byte(old)},
		UserInfo:  authenticationv1.UserInfo{Username: "alice"},
	}}
}

const nginxPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"team-a"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}`

// TestHandleMalformed checks that bad requests get a 4xx with the reason, never a panic and
// never an admission.
func TestHandleMalformed(t *testing.T) {
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "no-latest"},
		Spec:       imagegatev1alpha1.ImagePolicySpec{Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}},
	}}, nil)
	v := newTestValidator(t, snap)
	cases := map[string]struct {
		req  admission.Request
		code int32
		msg  string
	}{
		"empty object":       {request(admissionv1.Create, "pods", "", "", ""), 400, "decoding the Pod: there is no content to decode"},
		"not JSON":           {request(admissionv1.Create, "pods", "", "{nope", ""), 400, "decoding the Pod: "},
		"wrong resource":     {request(admissionv1.Create, "deployments", "", nginxPod, ""), 400, "imagegate checks pods and pods/ephemeralcontainers, not deployments"},
		"wrong subresource":  {request(admissionv1.Update, "pods", "status", nginxPod, nginxPod), 400, "imagegate checks pods and pods/ephemeralcontainers, not pods/status"},
		"delete":             {request(admissionv1.Delete, "pods", "", nginxPod, ""), 400, "imagegate checks CREATE and UPDATE, not DELETE"},
		"update without old": {request(admissionv1.Update, "pods", "", nginxPod, ""), 400, "decoding the old Pod: there is no content to decode"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			resp := v.Handle(context.Background(), c.req)
			g.Expect(resp.Allowed).To(BeFalse())
			g.Expect(resp.Result.Code).To(Equal(c.code))
			g.Expect(resp.Result.Message).To(HavePrefix(c.msg))
		})
	}
}

func TestHandleDecision(t *testing.T) {
	g := NewWithT(t)
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "no-latest"},
		Spec:       imagegatev1alpha1.ImagePolicySpec{Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}},
	}}, nil)

	resp := newTestValidator(t, snap).Handle(context.Background(), request(admissionv1.Create, "pods", "", nginxPod, ""))
	g.Expect(resp.Allowed).To(BeFalse())
	g.Expect(resp.Result.Code).To(Equal(int32(403)))
	g.Expect(resp.Result.Message).To(Equal(`spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "no-latest": it has neither tag nor digest, so it runs as "latest", which is in tags.deny`))
	g.Expect(resp.AuditAnnotations).To(Equal(map[string]string{"decision": "denied", "policies": "Enforce:ClusterImagePolicy/no-latest"}))

	resp = newTestValidator(t, snap).Handle(context.Background(), request(admissionv1.Update, "pods", "ephemeralcontainers", nginxPod, nginxPod))
	g.Expect(resp.Allowed).To(BeTrue(), "an unchanged image is not checked again")
	g.Expect(resp.AuditAnnotations).To(Equal(map[string]string{"decision": "allowed"}))

	resp = newTestValidator(t, nil).Handle(context.Background(), request(admissionv1.Create, "pods", "", nginxPod, ""))
	g.Expect(resp.Allowed).To(BeFalse(), "before the policies are loaded nothing is admitted")
	g.Expect(resp.Result.Message).To(Equal("imagegate has not loaded its policies yet; retry in a few seconds"))
}

// blockingReader stands for a cache whose informer has not synced: Get waits until the
// context ends.
type blockingReader struct{ client.Reader }

func (blockingReader) Get(ctx context.Context, _ client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	<-ctx.Done()
	return ctx.Err()
}

// A slow dependency cannot hold a request past the webhook's deadline: the namespace lookup
// has its own bound (the test has none, so without it this test would hang), and past it only
// the policies that select namespaces refuse, asking to retry.
func TestSlowNamespaceLookupIsBounded(t *testing.T) {
	g := NewWithT(t)
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: imagegatev1alpha1.ImagePolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}, RequireDigest: ptr.To(true),
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "everywhere"}, Spec: imagegatev1alpha1.ImagePolicySpec{Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}}},
	}, nil)
	scheme := runtime.NewScheme()
	g.Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	v := NewPodValidator(fixedSnapshot{snap}, blockingReader{}, nil)
	resp := v.Handle(context.Background(), request(admissionv1.Create, "pods", "", nginxPod, ""))
	g.Expect(resp.Allowed).To(BeFalse())
	g.Expect(resp.Result.Message).To(Equal(
		`metadata.namespace: the Pod is not allowed by ClusterImagePolicy "prod": the labels of namespace "team-a" are not known yet, so whether the policy applies cannot be told; retry` + "\n" +
			`spec.containers[0].image: image "nginx" (docker.io/library/nginx) is not allowed by ClusterImagePolicy "everywhere": it has neither tag nor digest, so it runs as "latest", which is in tags.deny`))
}

// The four bypass classes of issue 15 at the handler: the request as the apiserver sends it,
// the whole answer as it returns it.
func TestHandleBypassClasses(t *testing.T) {
	payments := imagegatev1alpha1.ImagePolicySpec{
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "payments"}},
		Images:      imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"ghcr.io/acme/**"}},
	}
	snap := policy.Compile([]imagegatev1alpha1.ClusterImagePolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "hub"}, Spec: imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Allow: []imagegatev1alpha1.ImagePattern{"docker.io/library/*", "docker.io/attacker/*", "ghcr.io/**", "registry.corp/**"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "no-miners"}, Spec: imagegatev1alpha1.ImagePolicySpec{Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"docker.io/cryptominer/**", "ghcr.io/evil/**"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "payments"}, Spec: payments},
	}, nil)
	v := newTestValidator(t, snap)
	cases := []struct {
		name     string
		req      admission.Request
		messages []string // empty: admitted
	}{
		{"image ID", request(admissionv1.Create, "pods", "", podJSON("sha256:4f1d"), ""), []string{
			`spec.containers[0].image: image "sha256:4f1d" is not allowed by ClusterImagePolicy "hub": it could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)`,
			`spec.containers[0].image: image "sha256:4f1d" is not allowed by ClusterImagePolicy "no-miners": it could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)`,
		}},
		{"Docker Hub by another name", request(admissionv1.Create, "pods", "", podJSON("registry-1.docker.io/cryptominer/xmrig:6.21"), ""), []string{
			`spec.containers[0].image: image "registry-1.docker.io/cryptominer/xmrig:6.21" (docker.io/cryptominer/xmrig:6.21) is not allowed by ClusterImagePolicy "hub": it matches no pattern in images.allow`,
			`spec.containers[0].image: image "registry-1.docker.io/cryptominer/xmrig:6.21" (docker.io/cryptominer/xmrig:6.21) is not allowed by ClusterImagePolicy "no-miners": it matches images.deny[0] "docker.io/cryptominer/**"`,
		}},
		{"explicit default port", request(admissionv1.Create, "pods", "", podJSON("ghcr.io:443/evil/x:1"), ""), []string{
			`spec.containers[0].image: image "ghcr.io:443/evil/x:1" (ghcr.io/evil/x:1) is not allowed by ClusterImagePolicy "no-miners": it matches images.deny[1] "ghcr.io/evil/**"`,
		}},
		{"relabelled into a podSelector", request(admissionv1.Update, "pods", "",
			labelled(podJSON("docker.io/attacker/backdoor:1"), "payments"), labelled(podJSON("docker.io/attacker/backdoor:1"), "tmp")), []string{
			`spec.containers[0].image: image "docker.io/attacker/backdoor:1" is not allowed by ClusterImagePolicy "payments": it matches no pattern in images.allow`,
		}},
		{"a label edit inside the selector", request(admissionv1.Update, "pods", "",
			labelled(podJSON("ghcr.io/acme/pay:1"), "payments"), labelled(podJSON("ghcr.io/acme/pay:1"), "payments")), nil},
		{"control characters", request(admissionv1.Create, "pods", "", podJSON("evil.io/X\n\nNOTE all images verified"), ""), []string{
			`spec.containers[0].image: image "evil.io/X\n\nNOTE all images verified" is not allowed by ClusterImagePolicy "hub": it is not a valid image reference: invalid reference format: repository name (X\n\nNOTE all images verified) must be lowercase`,
			`spec.containers[0].image: image "evil.io/X\n\nNOTE all images verified" is not allowed by ClusterImagePolicy "no-miners": it is not a valid image reference: invalid reference format: repository name (X\n\nNOTE all images verified) must be lowercase`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			resp := v.Handle(context.Background(), c.req)
			if len(c.messages) == 0 {
				g.Expect(resp.Allowed).To(BeTrue(), resp.Result)
				return
			}
			g.Expect(resp.Allowed).To(BeFalse())
			g.Expect(resp.Result.Code).To(Equal(int32(403)))
			g.Expect(strings.Split(resp.Result.Message, "\n")).To(Equal(c.messages))
		})
	}
}
