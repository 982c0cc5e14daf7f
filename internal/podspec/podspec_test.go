package podspec

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/internal/policy"
)

// fullPod has everything that carries an image, and the rest of a real Pod around it.
const fullPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","generateName":"web-","namespace":"team-a",
"labels":{"app":"web"},"annotations":{"alpha.image-policy.k8s.io/break-glass":"true","other":"x"},
"managedFields":[{"manager":"kubectl","operation":"Apply","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{}}}]},
"spec":{"initContainers":[{"name":"init","image":"ghcr.io/acme/init:1","env":[{"name":"A","value":"b"}]}],
"containers":[{"name":"app","image":"ghcr.io/acme/app:1","resources":{"limits":{"cpu":"1"}},"ports":[{"containerPort":80}]},{"name":"side","image":"quay.io/x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],
"ephemeralContainers":[{"name":"debug","image":"busybox","targetContainerName":"app"}],
"volumes":[{"name":"data","emptyDir":{}},{"name":"model","image":{"reference":"ghcr.io/acme/model:2","pullPolicy":"IfNotPresent"}}],
"nodeSelector":{"a":"b"}},"status":{"phase":"Running"}}`

func decodeFull(t *testing.T) *corev1.Pod {
	t.Helper()
	var full corev1.Pod
	if err := kjson.UnmarshalCaseSensitivePreserveInts([]byte(fullPod), &full); err != nil {
		t.Fatal(err)
	}
	return &full
}

func TestPodImages(t *testing.T) {
	g := NewWithT(t)
	g.Expect(PodImages(&decodeFull(t).Spec, "spec")).To(Equal([]policy.Image{
		{Field: "spec.initContainers[0].image", Ref: "ghcr.io/acme/init:1", Container: "init"},
		{Field: "spec.containers[0].image", Ref: "ghcr.io/acme/app:1", Container: "app"},
		{Field: "spec.containers[1].image", Ref: "quay.io/x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Container: "side"},
		{Field: "spec.ephemeralContainers[0].image", Ref: "busybox", Container: "debug"},
		{Field: "spec.volumes[1].image.reference", Ref: "ghcr.io/acme/model:2", Container: "model"},
	}))
	// An empty image is listed, to be judged as unparsable rather than skipped.
	g.Expect(PodImages(&corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}, "spec.template.spec")).To(Equal(
		[]policy.Image{{Field: "spec.template.spec.containers[0].image", Container: "c"}}))
}

// DecodePod reads only part of a Pod: it must read that part exactly as a full decode does.
func TestDecodePodReadsWhatAFullDecodeReads(t *testing.T) {
	g := NewWithT(t)
	full := decodeFull(t)
	var part corev1.Pod
	g.Expect(DecodePod([]byte(fullPod), &part)).To(Succeed())
	g.Expect(PodImages(&part.Spec, "spec")).To(Equal(PodImages(&full.Spec, "spec")))
	g.Expect(PodImages(&part.Spec, "spec")).To(HaveLen(5))
	g.Expect([]any{part.Name, part.GenerateName, part.Namespace, part.Labels, part.Annotations}).To(
		Equal([]any{full.Name, full.GenerateName, full.Namespace, full.Labels, full.Annotations}))
	for _, bad := range []string{``, `null`, `{"apiVersion":"apps/v1","kind":"Deployment"}`, `{"kind":"Pod"}`, `{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"image":7}]}}`} {
		g.Expect(DecodePod([]byte(bad), &corev1.Pod{})).NotTo(Succeed(), bad)
	}
}

// The audit reads Pods through Slim: what it reads must be what the full Pod says.
func TestSlimKeepsWhatTheAuditReads(t *testing.T) {
	g := NewWithT(t)
	full := decodeFull(t)
	full.Status.Phase = corev1.PodRunning
	full.OwnerReferences = []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "ConfigMap", Name: "not-the-controller", UID: "u0"},
		{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8b6c5", UID: "u1", Controller: ptr.To(true)},
	}
	full.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: full.Spec.Containers[0].Name, ImageID: "ghcr.io/acme/web@sha256:" + strings.Repeat("a", 64)}}
	out, err := Slim(full.DeepCopy())
	g.Expect(err).NotTo(HaveOccurred())
	slim := out.(*Running)
	want := policy.Subject{Namespace: full.Namespace, NamespaceLabels: map[string]string{"team": "a"}, PodLabels: full.Labels,
		Images: PodImages(&full.Spec, "spec"), BreakGlass: policy.BreakGlassRequested(full.Annotations)}
	SetRunning(want.Images, &full.Status)
	g.Expect(want.Images[1].Running).To(HavePrefix("sha256:aaaa"))
	got, ok := slim.Subject(map[string]string{"team": "a"})
	g.Expect(ok).To(BeTrue())
	g.Expect(got).To(Equal(want))
	g.Expect([]any{slim.Name, slim.Namespace, slim.UID, slim.ResourceVersion}).To(Equal([]any{full.Name, full.Namespace, full.UID, full.ResourceVersion}))
	g.Expect(slim.Controller()).To(Equal(&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8b6c5", UID: "u1", Controller: ptr.To(true)}))
	g.Expect(slim.Annotations).To(BeNil(), "only the break-glass request is kept")
	g.Expect(slim.DeepCopyObject()).To(Equal(slim))
	g.Expect(slim.Same(slim.DeepCopyObject().(*Running))).To(BeTrue())
	moved := full.DeepCopy()
	moved.Status.ContainerStatuses[0].ImageID = "ghcr.io/acme/web@sha256:" + strings.Repeat("b", 64)
	g.Expect(slim.Same(NewRunning(moved))).To(BeFalse(), "another running digest is another verdict")
	moved = full.DeepCopy()
	moved.ResourceVersion = "999"
	moved.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	g.Expect(slim.Same(NewRunning(moved))).To(BeTrue(), "a status update that changes no verdict")

	full.Status.Phase = corev1.PodSucceeded
	done := NewRunning(full)
	g.Expect(done.Finished).To(BeTrue())
	g.Expect(done.Images).To(BeNil())
	_, ok = done.Subject(nil)
	g.Expect(ok).To(BeFalse())
	other := &corev1.Namespace{}
	g.Expect(Slim(other)).To(BeIdenticalTo(other))
}

// imageFields walks a type and returns the paths of every field that names an image: a string
// field called Image, or an ImageVolumeSource.
func imageFields(t reflect.Type, path string, seen map[reflect.Type]bool, out *[]string) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice:
		imageFields(t.Elem(), path, seen, out)
		return
	case reflect.Struct:
	default:
		return
	}
	if t == reflect.TypeOf(corev1.ImageVolumeSource{}) {
		*out = append(*out, path)
		return
	}
	if seen[t] {
		return
	}
	seen[t] = true
	defer delete(seen, t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		p := path
		if !f.Anonymous || name != "" {
			p = path + "." + name
		}
		if f.Name == "Image" && f.Type.Kind() == reflect.String {
			*out = append(*out, p)
			continue
		}
		imageFields(f.Type, p, seen, out)
	}
}

// Kubernetes may add a field that holds an image: this fails then, and says where to add it.
func TestEveryImageFieldOfAPodSpecIsKnown(t *testing.T) {
	var found []string
	imageFields(reflect.TypeOf(corev1.PodSpec{}), "spec", map[reflect.Type]bool{}, &found)
	want := []string{
		"spec.volumes.image",
		"spec.initContainers.image",
		"spec.containers.image",
		"spec.ephemeralContainers.image",
	}
	slices.Sort(found)
	slices.Sort(want)
	if !slices.Equal(found, want) {
		t.Fatalf("corev1.PodSpec holds images at %v; imagegate reads %v. A new image field must be added to "+
			"imageLists, PodImages, DecodePod's view and NewRunning (this package), and to the Pod webhook's "+
			"matchConditions in config/webhook/scope_patch.yaml", found, want)
	}
	for _, l := range imageLists {
		if !slices.ContainsFunc(found, func(f string) bool { return strings.HasPrefix(f, "spec."+l+".") }) {
			t.Errorf("imageLists names %q, which holds no image", l)
		}
	}
}

// TemplateOf reads every kind Workloads lists, at its field path; and nothing else.
func TestTemplateOfEveryWorkload(t *testing.T) {
	g := NewWithT(t)
	scheme := runtime.NewScheme()
	g.Expect(corev1.AddToScheme(scheme)).To(Succeed())
	g.Expect(appsv1.AddToScheme(scheme)).To(Succeed())
	g.Expect(batchv1.AddToScheme(scheme)).To(Succeed())
	spec := `{"containers":[{"name":"app","image":"ghcr.io/acme/app:1"}]}`
	tmpl := `{"metadata":{"labels":{"app":"x"}},"spec":` + spec + `}`
	for _, w := range workloads {
		obj, err := scheme.New(w.GroupVersionKind)
		g.Expect(err).NotTo(HaveOccurred(), w.Kind)
		raw := `{"spec":{"template":` + tmpl + `}}`
		if w.Kind == "CronJob" {
			raw = `{"spec":{"jobTemplate":{"spec":{"template":` + tmpl + `}}}}`
		}
		g.Expect(kjson.UnmarshalCaseSensitivePreserveInts([]byte(raw), obj)).To(Succeed())
		got, ok := TemplateOf(obj)
		g.Expect(ok).To(BeTrue(), w.Kind)
		g.Expect(got.Prefix).To(Equal(w.TemplateSpec), w.Kind)
		g.Expect(got.Labels).To(Equal(map[string]string{"app": "x"}), w.Kind)
		g.Expect(got.Images()).To(Equal([]policy.Image{{Field: w.TemplateSpec + ".containers[0].image", Ref: "ghcr.io/acme/app:1", Container: "app"}}), w.Kind)
		g.Expect(WorkloadKind(w.GroupVersionKind)).To(BeTrue(), w.Kind)
		gv, ok := ServedVersion(w.GroupVersion().WithKind(w.Kind))
		g.Expect(ok).To(BeTrue())
		g.Expect(gv).To(Equal(w.GroupVersion()))
		// Another group's kind of the same name is not Kubernetes' (OpenKruise, Volcano).
		_, ok = ServedVersion(schema.GroupVersionKind{Group: "example.io", Version: "v1", Kind: w.Kind})
		g.Expect(ok).To(BeFalse(), w.Kind)
	}
	for _, old := range []schema.GroupVersionKind{
		{Group: "extensions", Version: "v1beta1", Kind: "Deployment"},
		{Group: "apps", Version: "v1beta2", Kind: "StatefulSet"},
		{Group: "batch", Version: "v1beta1", Kind: "CronJob"},
	} {
		gv, ok := ServedVersion(old)
		g.Expect(ok).To(BeTrue(), old.String())
		g.Expect(gv.Version).To(Equal("v1"), old.String())
	}
	_, ok := TemplateOf(&corev1.ConfigMap{})
	g.Expect(ok).To(BeFalse())
	g.Expect(WorkloadKind(appsv1.SchemeGroupVersion.WithKind("Pod"))).To(BeFalse())
	rc, ok := TemplateOf(&corev1.ReplicationController{})
	g.Expect(ok).To(BeTrue())
	g.Expect(rc.Images()).To(BeEmpty(), "a ReplicationController may omit its template")
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The workload webhook's rules are generated from a marker in internal/webhook: they must name
// exactly the kinds this package reads.
func TestWorkloadWebhookRulesNameEveryWorkload(t *testing.T) {
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	data, err := os.ReadFile("../../config/webhook/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.Contains(doc, "kind: ValidatingWebhookConfiguration") {
			if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	var rules []admissionregistrationv1.RuleWithOperations
	for _, w := range cfg.Webhooks {
		if w.Name == "workloads.imagegate.io" {
			rules = w.Rules
		}
	}
	if len(rules) == 0 {
		t.Fatal("config/webhook/manifests.yaml has no workloads.imagegate.io webhook")
	}
	var got, want []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, v := range r.APIVersions {
				for _, res := range r.Resources {
					got = append(got, g+"/"+v+"/"+res)
				}
			}
		}
	}
	// The marker's rules are a cross product of groups, versions and resources (apps/v1/jobs is
	// listed and does not exist): what matters is that every workload is covered and that no
	// resource other than a workload's is named.
	var resources []string
	for _, w := range workloads {
		want = append(want, w.Group+"/"+w.Version+"/"+w.Resource)
		resources = append(resources, w.Resource)
	}
	missing := diff(want, got)
	var extra []string
	for _, r := range rules {
		extra = append(extra, diff(r.Resources, resources)...)
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("the +kubebuilder:webhook marker of workloads.imagegate.io (internal/webhook/workload_webhook.go) and "+
			"podspec.Workloads disagree: missing %v, not a workload %v (edit the marker, then make manifests)", missing, extra)
	}
}

func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// The patches of the validating webhooks (pods, workloads) and of the mutating one (pin).
const (
	scopePatch    = "scope_patch.yaml"
	pinScopePatch = "pin_scope_patch.yaml"
)

func patchValue(t *testing.T, file, path string) any {
	t.Helper()
	var ops []map[string]any
	readYAML(t, "../../config/webhook/"+file, &ops)
	for _, op := range ops {
		if op["path"] == path {
			return op["value"]
		}
	}
	t.Fatalf("config/webhook/%s does not set %s", file, path)
	return nil
}

// Both webhooks leave out exactly DefaultExcludedNamespaces, the default of the manager's and
// the CLI's --excluded-namespaces (their tests check those defaults).
func TestExcludedNamespacesAreTheWebhookScope(t *testing.T) {
	for _, fp := range [][2]string{{scopePatch, "/webhooks/0/namespaceSelector"}, {scopePatch, "/webhooks/1/namespaceSelector"}, {pinScopePatch, "/webhooks/0/namespaceSelector"}} {
		path := fp[0] + " " + fp[1]
		sel, _ := patchValue(t, fp[0], fp[1]).(map[string]any)
		exprs, _ := sel["matchExpressions"].([]any)
		found := false
		for _, e := range exprs {
			m, _ := e.(map[string]any)
			if m["key"] != corev1.LabelMetadataName || m["operator"] != "NotIn" {
				continue
			}
			found = true
			var values []string
			for _, v := range m["values"].([]any) {
				values = append(values, v.(string))
			}
			if !slices.Equal(values, DefaultExcludedNamespaces) {
				t.Errorf("%s excludes %v; podspec.DefaultExcludedNamespaces is %v", path, values, DefaultExcludedNamespaces)
			}
		}
		if !found {
			t.Errorf("%s has no %s NotIn expression", path, corev1.LabelMetadataName)
		}
	}
}

func matchCondition(t *testing.T, file, path, name string) string {
	t.Helper()
	conds, _ := patchValue(t, file, path).([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["name"] == name {
			return m["expression"].(string)
		}
	}
	t.Fatalf("%s has no matchCondition %q", path, name)
	return ""
}

// The Pod webhook's matchConditions let an UPDATE through only when something imagegate reads
// changed: every image list, and the labels (a podSelector reads them).
func TestPodMatchConditionComparesEveryImageListAndTheLabels(t *testing.T) {
	expr := matchCondition(t, scopePatch, "/webhooks/0/matchConditions", "image-or-label-changed")
	for _, l := range imageLists {
		if !strings.Contains(expr, "object.spec."+l+" != oldObject.spec."+l) {
			t.Errorf("the image-or-label-changed matchCondition does not compare spec.%s: an UPDATE of it would not be checked", l)
		}
	}
	if !strings.Contains(expr, "object.metadata.labels != oldObject.metadata.labels") {
		t.Error("the image-or-label-changed matchCondition does not compare the labels: a Pod relabelled into a podSelector would not be checked")
	}
}

// The mutating webhook's matchConditions let an UPDATE through when any image list changed:
// a changed image may need its tag pinned.
func TestPinMatchConditionComparesEveryImageList(t *testing.T) {
	expr := matchCondition(t, pinScopePatch, "/webhooks/0/matchConditions", "image-changed")
	for _, l := range imageLists {
		if !strings.Contains(expr, "object.spec."+l+" != oldObject.spec."+l) {
			t.Errorf("the image-changed matchCondition does not compare spec.%s: a tag set by an UPDATE of it would not be pinned", l)
		}
	}
}

// The workload webhook's matchConditions compare the whole pod template (spec and labels) of
// every kind.
func TestWorkloadMatchConditionComparesEveryTemplate(t *testing.T) {
	expr := matchCondition(t, scopePatch, "/webhooks/1/matchConditions", "template-changed")
	for _, w := range workloads {
		path := strings.TrimSuffix(w.TemplateSpec, ".spec")
		if !strings.Contains(expr, "object."+path+" != oldObject."+path) {
			t.Errorf("the template-changed matchCondition does not compare %s of %s", path, w.Kind)
		}
	}
}

// TestSetRunning reads the digest each container runs from its status, by container kind and
// name, as the kubelet reports it for containerd and CRI-O (repository@digest, or
// docker-pullable:// before it); an image ID without a registry digest gives none.
func TestSetRunning(t *testing.T) {
	g := NewWithT(t)
	const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "app", Image: "init:1"}},
		Containers:     []corev1.Container{{Name: "app", Image: "app:1"}, {Name: "side", Image: "side:1"}, {Name: "local", Image: "local:1"}},
		Volumes:        []corev1.Volume{{Name: "app", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "data:1"}}}},
	}
	status := &corev1.PodStatus{
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "app", ImageID: "docker-pullable://docker.io/library/init@" + d2}},
		ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", ImageID: "docker.io/library/app@" + d1},
			{Name: "side", ImageID: ""},
			{Name: "local", ImageID: d1}, // loaded on the node: an image ID, no registry digest
		},
	}
	images := PodImages(spec, "spec")
	SetRunning(images, status)
	var running []string
	for _, img := range images {
		running = append(running, img.Field+"="+img.Running)
	}
	g.Expect(running).To(Equal([]string{
		"spec.initContainers[0].image=" + d2,
		"spec.containers[0].image=" + d1,
		"spec.containers[1].image=",
		"spec.containers[2].image=",
		"spec.volumes[0].image.reference=",
	}))
	for id, want := range map[string]string{
		"repo@" + d1:                  d1,
		"repo@sha256:ABC":             "",
		"repo@sha512:" + d1[7:]:       "",
		"repo@" + d1 + "x":            "",
		"repo@" + d1[:70] + "g":       "",
		"repo:tag":                    "",
		"":                            "",
		"docker-pullable://a/b@" + d2: d2,
	} {
		g.Expect(RunningDigest(id)).To(Equal(want), id)
	}
}

// Replicas share their labels' map and their strings; a record never sees another's labels.
func TestRunningRecordsShareWhatReplicasShare(t *testing.T) {
	g := NewWithT(t)
	a, b := decodeFull(t), decodeFull(t)
	b.Name = "web-2"
	ra, rb := NewRunning(a), NewRunning(b)
	g.Expect(reflect.ValueOf(ra.Labels).UnsafePointer()).To(Equal(reflect.ValueOf(rb.Labels).UnsafePointer()), "one map for equal labels")
	g.Expect(unsafe.StringData(ra.Images[0].Ref)).To(Equal(unsafe.StringData(rb.Images[0].Ref)), "one copy of an image reference")
	b.Labels = map[string]string{"app": "web", "track": "canary"}
	rc := NewRunning(b)
	g.Expect(rc.Labels).To(Equal(map[string]string{"app": "web", "track": "canary"}))
	g.Expect(ra.Labels).To(Equal(a.Labels))
	b.Labels = nil
	g.Expect(NewRunning(b).Labels).To(BeNil())
	// The table starts again when full; records keep their maps.
	for i := range labelSetsMax + 1 {
		b.Labels = map[string]string{"i": fmt.Sprint(i)}
		NewRunning(b)
	}
	g.Expect(len(labelSets.sets)).To(BeNumerically("<=", labelSetsMax))
	g.Expect(ra.Labels).To(Equal(a.Labels))
}
