package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	imagegatev1alpha1 "github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/check"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podcache"
	"github.com/imagegate/imagegate/internal/policy"
)

// exceptionCase is one row of the shared table: the exceptions in force, the Pod (labels and
// image), the time of the decision, and whether it is admitted.
type exceptionCase struct {
	name       string
	exceptions []imagegatev1alpha1.ImagePolicyException
	labels     map[string]string
	image      string
	at         time.Time
	admitted   bool
	// labelled: the row depends on the Pod's labels, which an ImageReview does not carry
	// (there the exception does not apply, and the image is refused: stricter, never looser).
	labelled bool
}

var expiry = time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)

func vendorException(mod func(*imagegatev1alpha1.ImagePolicyException)) []imagegatev1alpha1.ImagePolicyException {
	e := imagegatev1alpha1.ImagePolicyException{
		TypeMeta:   metav1.TypeMeta{APIVersion: imagegatev1alpha1.GroupVersion.String(), Kind: "ImagePolicyException"},
		ObjectMeta: metav1.ObjectMeta{Name: "vendor-latest", Namespace: "shop"},
		Spec: imagegatev1alpha1.ImagePolicyExceptionSpec{
			Reason:    "the vendor ships only :latest until v5 (TICKET-123)",
			ExpiresAt: &metav1.Time{Time: expiry},
			Images:    []imagegatev1alpha1.ImagePattern{"docker.io/vendor/**"},
			Policies:  []imagegatev1alpha1.ExceptedPolicy{{Kind: "ClusterImagePolicy", Name: "no-latest", Rules: []imagegatev1alpha1.ExceptedRule{"tags.deny"}}},
		},
	}
	if mod != nil {
		mod(&e)
	}
	return []imagegatev1alpha1.ImagePolicyException{e}
}

func exceptionTable() []exceptionCase {
	before := expiry.Add(-time.Second)
	return []exceptionCase{
		{name: "no exception", image: "docker.io/vendor/appliance:latest", at: before},
		{name: "active", exceptions: vendorException(nil), image: "docker.io/vendor/appliance:latest", at: before, admitted: true},
		{name: "at the instant of expiry", exceptions: vendorException(nil), image: "docker.io/vendor/appliance:latest", at: expiry},
		{name: "after expiry", exceptions: vendorException(nil), image: "docker.io/vendor/appliance:latest", at: expiry.Add(time.Hour)},
		{name: "no expiry", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) { e.Spec.ExpiresAt = nil }),
			image: "docker.io/vendor/appliance:latest", at: expiry.Add(time.Hour), admitted: true},
		{name: "another image", exceptions: vendorException(nil), image: "docker.io/someone/else:latest", at: before},
		{name: "another rule", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) {
			e.Spec.Policies[0].Rules = []imagegatev1alpha1.ExceptedRule{"images.deny"}
		}), image: "docker.io/vendor/appliance:latest", at: before},
		{name: "every rule of the policy", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) { e.Spec.Policies[0].Rules = nil }),
			image: "docker.io/vendor/appliance:latest", at: before, admitted: true},
		{name: "another policy", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) { e.Spec.Policies[0].Name = "other" }),
			image: "docker.io/vendor/appliance:latest", at: before},
		{name: "another namespace", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) { e.Namespace = "elsewhere" }),
			image: "docker.io/vendor/appliance:latest", at: before},
		{name: "pod selected", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) {
			e.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "appliance"}}
		}), labels: map[string]string{"app": "appliance"}, image: "docker.io/vendor/appliance:latest", at: before, admitted: true, labelled: true},
		{name: "pod not selected", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) {
			e.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "appliance"}}
		}), labels: map[string]string{"app": "web"}, image: "docker.io/vendor/appliance:latest", at: before},
		{name: "policy forbids exceptions", exceptions: vendorException(func(e *imagegatev1alpha1.ImagePolicyException) {
			e.Spec.Policies = []imagegatev1alpha1.ExceptedPolicy{{Kind: "ClusterImagePolicy", Name: "locked"}}
		}), image: "docker.io/vendor/locked:1", at: before},
	}
}

// tablePolicies: no-latest (Enforce) refuses :latest; locked forbids exceptions and refuses
// docker.io/vendor/locked.
func tablePolicies() []imagegatev1alpha1.ClusterImagePolicy {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: 1}
	}
	tm := metav1.TypeMeta{APIVersion: imagegatev1alpha1.GroupVersion.String(), Kind: "ClusterImagePolicy"}
	return []imagegatev1alpha1.ClusterImagePolicy{
		{TypeMeta: tm, ObjectMeta: meta("no-latest"), Spec: imagegatev1alpha1.ImagePolicySpec{Tags: imagegatev1alpha1.TagRules{Deny: []imagegatev1alpha1.TagName{"latest"}}}},
		{TypeMeta: tm, ObjectMeta: meta("locked"), Spec: imagegatev1alpha1.ImagePolicySpec{AllowExceptions: ptr.To(false),
			Images: imagegatev1alpha1.ImageRules{Deny: []imagegatev1alpha1.ImagePattern{"docker.io/vendor/locked"}}}},
	}
}

// TestExceptionsDecideAlikeEverywhere runs the table through the Pod webhook, the workload
// webhook, the ImageReview endpoint, the background audit and imagegate check, each at the
// row's time: an exception applies, or stops applying at its expiresAt, in all of them at once.
func TestExceptionsDecideAlikeEverywhere(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := imagegatev1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{corev1.LabelMetadataName: "shop"}}}
	for _, c := range exceptionTable() {
		t.Run(c.name, func(t *testing.T) {
			clock := func() time.Time { return c.at }
			snap := policy.CompileWith(tablePolicies(), nil, policy.Options{Exceptions: c.exceptions, Now: clock})
			for _, ex := range c.exceptions {
				if e := snap.ExceptionError(policy.Ref{Kind: policy.KindImagePolicyException, Namespace: ex.Namespace, Name: ex.Name}); e != "" {
					t.Fatal(e)
				}
			}
			labels, _ := json.Marshal(c.labels)
			podJSON := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"appliance","namespace":"shop","labels":%s},"spec":{"containers":[{"name":"app","image":%q}]}}`, labels, c.image)
			reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(shop.DeepCopy()).Build()
			got := map[string]bool{}

			// The Pod webhook, with the warning that names the exception.
			req := request(admissionv1.Create, "pods", "", podJSON, "")
			req.Namespace = "shop"
			resp := NewPodValidator(fixedSnapshot{snap}, reader, nil).Handle(context.Background(), req)
			got["pod webhook"] = resp.Allowed
			if resp.Allowed && len(c.exceptions) > 0 && !strings.Contains(strings.Join(resp.Warnings, "\n"), `ImagePolicyException "shop/vendor-latest" exempts`) {
				t.Errorf("admitted without the exception's warning: %v", resp.Warnings)
			}
			if resp.Allowed && len(c.exceptions) > 0 && resp.AuditAnnotations[policy.AnnotationExceptions] != "shop/vendor-latest" {
				t.Errorf("audit annotations %v", resp.AuditAnnotations)
			}

			// The workload webhook.
			deploy := fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"appliance","namespace":"shop"},"spec":{"selector":{"matchLabels":%s},"template":{"metadata":{"labels":%s},"spec":{"containers":[{"name":"app","image":%q}]}}}}`, labels, labels, c.image)
			wreq := request(admissionv1.Create, "deployments", "", deploy, "")
			wreq.Namespace, wreq.Kind = "shop", metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
			wreq.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
			got["workload webhook"] = NewWorkloadValidator(scheme, fixedSnapshot{snap}, reader, true, nil).Handle(context.Background(), wreq).Allowed

			// The ImageReview endpoint (no Pod labels: a podSelector cannot be told).
			rec := postReview(t, NewImageReviewHandler(fixedSnapshot{snap}, reader, nil, nil), "POST", "application/json", reviewJSON("shop", nil, c.image))
			got["imagereview"] = strings.Contains(rec.Body.String(), `"allowed":true`)

			// The background audit of the same Pod, running.
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "appliance", Namespace: "shop", Labels: c.labels},
				Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: c.image}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning}}
			objs := []client.Object{shop.DeepCopy(), pod}
			for _, p := range tablePolicies() {
				objs = append(objs, p.DeepCopy())
			}
			for _, ex := range c.exceptions {
				objs = append(objs, ex.DeepCopy())
			}
			ac := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
				WithStatusSubresource(&imagegatev1alpha1.ClusterImagePolicy{}, &imagegatev1alpha1.ImagePolicyException{}).Build()
			a := &controller.Auditor{Client: ac, Cache: ac, Pods: podcache.Reader{Reader: ac}, Interval: time.Hour}
			if err := a.Run(context.Background(), snap); err != nil {
				t.Fatal(err)
			}
			violating := int32(0)
			for _, p := range tablePolicies() {
				var stored imagegatev1alpha1.ClusterImagePolicy
				if err := ac.Get(context.Background(), client.ObjectKey{Name: p.Name}, &stored); err != nil {
					t.Fatal(err)
				}
				violating += stored.Status.Audit.Violations
			}
			got["audit"] = violating == 0
			if len(c.exceptions) > 0 && c.exceptions[0].Namespace == "shop" {
				var stored imagegatev1alpha1.ImagePolicyException
				if err := ac.Get(context.Background(), client.ObjectKeyFromObject(&c.exceptions[0]), &stored); err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int32{true: 1, false: 0}[c.admitted]; stored.Status.Pods == nil || *stored.Status.Pods != want {
					t.Errorf("exception status.pods = %v, want %d", stored.Status.Pods, want)
				}
			}

			// imagegate check, reading the exceptions from the policy files.
			dir := t.TempDir()
			var docs []string
			for _, p := range tablePolicies() {
				b, _ := yaml.Marshal(p)
				docs = append(docs, string(b))
			}
			for _, ex := range c.exceptions {
				b, _ := yaml.Marshal(ex)
				docs = append(docs, string(b))
			}
			policyFile := filepath.Join(dir, "policies.yaml")
			if err := os.WriteFile(policyFile, []byte(strings.Join(docs, "---\n")), 0o600); err != nil {
				t.Fatal(err)
			}
			podFile := filepath.Join(dir, "pod.json")
			if err := os.WriteFile(podFile, []byte(podJSON), 0o600); err != nil {
				t.Fatal(err)
			}
			report, err := check.Run(context.Background(), check.Options{PolicyPaths: []string{policyFile}, Paths: []string{podFile}, Now: clock, Offline: true})
			if err != nil || len(report.Errors) > 0 {
				t.Fatalf("check: %v %+v", err, report.Errors)
			}
			got["imagegate check"] = report.ExitCode() == check.ExitAdmitted

			for surface, admitted := range got {
				want := c.admitted
				if surface == "imagereview" && c.labelled {
					want = false
				}
				if admitted != want {
					t.Errorf("%s: admitted = %v, want %v", surface, admitted, want)
				}
			}
		})
	}
}
