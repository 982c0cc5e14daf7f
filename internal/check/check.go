// Package check is the offline check behind `imagegate check`: it reads policies and
// manifests (internal/manifest), validates the policies as the apiserver would
// (internal/crdschema), and decides every Pod and pod template with the webhook's engine
// (internal/policy), so that a CI pipeline and the cluster never disagree.
package check

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kjson "sigs.k8s.io/json"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/crdschema"
	"github.com/imagegate/imagegate/internal/manifest"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
)

// Options says what to check.
type Options struct {
	// PolicyPaths are files and folders holding ImagePolicies and ClusterImagePolicies.
	PolicyPaths []string
	// Paths are files and folders holding the manifests to check; "-" is standard input.
	Paths []string
	// Stdin is read for "-"; nil means os.Stdin.
	Stdin io.Reader
	// MaxFileSize bounds each input file; 0 means manifest.DefaultMaxFileSize.
	MaxFileSize int64
	// ExcludedNamespaces are not checked, as the webhook is never sent their Pods (see
	// podspec.DefaultExcludedNamespaces). Their objects are counted as skipped.
	ExcludedNamespaces []string
	// Offline skips verify rules: no registry is contacted, and each image a verify rule
	// covers is reported as not verified.
	Offline bool
	// Verifier checks verify rules in registries; nil: one with the local Docker
	// credentials (the keychain `docker login` writes).
	Verifier *verify.Verifier
	// Keychain, when set, gives registry credentials before the local Docker ones (the
	// kubelet's image credential provider plugins: --image-credential-provider-config).
	Keychain authn.Keychain
	// TUF configures the TUF clients of verify rules' tufRoots (tests: a client that trusts a
	// local repository); zero: in memory, the system's roots.
	TUF verify.TUFOptions
	// Now is the time exceptions are judged at (whether they have expired); nil: time.Now.
	Now func() time.Time
	// Cluster, when set, is read (beside PolicyPaths) for the policies and exceptions in
	// force, the labels of its Namespaces, and the Secrets and ConfigMaps that verify rules
	// name in imagegate's namespace (ClusterNamespace). A policy in the files replaces the
	// cluster's of the same name (a change under review). ClusterName names it in messages.
	Cluster          client.Reader
	ClusterName      string
	ClusterNamespace string
	// PodTemplates says where other kinds keep a pod template (a PodTemplateSpec), by kind and
	// group: {Kind: Rollout, Group: argoproj.io} -> "spec.template". Such objects are decided
	// by that template, as a Deployment is by its own.
	PodTemplates map[schema.GroupKind]string
	// Namespace is where the manifests' objects without a namespace go (kubectl apply -n);
	// empty: DefaultNamespace. An object that names another namespace is an input error, as
	// kubectl refuses it.
	Namespace string
	// Running, with Cluster, also checks the Pods running in the cluster, as the audit and
	// the policy change preflight judge them (the digests their containers run): what the
	// policies would refuse among what runs now, at the Pods' next creation.
	Running bool
}

// DefaultNamespace is where objects without a namespace go, as kubectl's default context.
const DefaultNamespace = "default"

// podGVK: Pods are checked as themselves, workloads by their pod templates.
var podGVK = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}

var namespaceGVK = schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}

// Run reads the inputs and decides every Pod and pod template in them.
func Run(ctx context.Context, opts Options) (*Report, error) {
	validator, err := crdschema.New()
	if err != nil {
		return nil, fmt.Errorf("loading the policy schema: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	reader := &manifest.Reader{MaxFileSize: opts.MaxFileSize, Stdin: opts.Stdin}
	// Manifests are what the cluster would get: a kustomization is rendered, as kubectl
	// apply -k renders it. Policy folders are read file by file.
	manifests := &manifest.Reader{MaxFileSize: opts.MaxFileSize, Stdin: opts.Stdin, Kustomize: true}
	r := &Report{offline: opts.Offline, verifier: opts.Verifier, now: opts.Now, tuf: opts.TUF}
	if !opts.Offline && r.verifier == nil {
		var kc authn.Keychain = authn.DefaultKeychain
		if opts.Keychain != nil {
			kc = authn.NewMultiKeychain(opts.Keychain, authn.DefaultKeychain)
		}
		r.verifier = verify.New(verify.Options{Keychain: kc})
		defer r.verifier.Close()
	}

	if slices.Contains(opts.PolicyPaths, manifest.Stdin) && slices.Contains(opts.Paths, manifest.Stdin) {
		r.Errors = append(r.Errors, InputError{Message: "standard input is named twice (--policy - and -): it can be read once; give the policies or the manifests as files"})
		r.countErrors()
		return r, nil
	}
	labels := map[string]map[string]string{}
	var clusterDocs []manifest.Document
	if opts.Cluster != nil {
		var err error
		if clusterDocs, err = readCluster(ctx, opts, labels); err != nil {
			r.Errors = append(r.Errors, InputError{Message: err.Error()})
			r.countErrors()
			return r, nil
		}
	}
	snap := r.loadPolicies(ctx, reader, validator, opts.PolicyPaths, clusterDocs)

	// One pass: Namespaces supply labels, workloads are reduced to what the engine needs, and
	// decided once every Namespace is known (they may come after the workloads).
	var pending []pendingObject
	documents := 0
	errs := manifests.Read(opts.Paths, func(d *manifest.Document) {
		documents++
		if ns, l, ok := namespaceLabels(d); ok {
			labels[ns] = l
			r.Summary.Skipped++
			return
		}
		if p, ok := r.readWorkload(scheme, d, opts.Namespace, opts.PodTemplates); ok {
			if slices.Contains(opts.ExcludedNamespaces, p.result.Namespace) {
				r.Summary.Skipped++
				return
			}
			pending = append(pending, p)
		}
	})
	r.addInputErrors(errs)
	if documents == 0 && len(errs) == 0 && len(opts.Paths) > 0 {
		// An empty render (a broken kustomize build piped in, say) must not pass as clean.
		r.Errors = append(r.Errors, InputError{Message: fmt.Sprintf("no documents in %s: nothing to check", strings.Join(opts.Paths, ", "))})
	}
	if opts.Running && opts.Cluster != nil {
		running, err := readRunning(ctx, opts)
		if err != nil {
			r.Errors = append(r.Errors, InputError{Message: err.Error()})
		}
		pending = append(pending, running...)
	}
	if snap != nil {
		for i := range pending {
			r.decide(ctx, snap, labels, &pending[i])
		}
	}
	r.countErrors()
	return r, nil
}

// loadPolicies reads, validates and compiles the policies; every problem becomes an input
// error. A nil snapshot means none could be loaded.
func (r *Report) loadPolicies(ctx context.Context, reader *manifest.Reader, v *crdschema.Validator, paths []string, clusterDocs []manifest.Document) *policy.Snapshot {
	if len(paths) == 0 && clusterDocs == nil {
		r.Errors = append(r.Errors, InputError{Message: "no --policy given: name the files or folders that hold the policies, or read them with --cluster"})
		return nil
	}
	var docs []manifest.Document
	r.addInputErrors(reader.Read(paths, func(d *manifest.Document) { docs = append(docs, *d) }))
	docs = r.mergeCluster(docs, clusterDocs)
	var cluster []v1alpha1.ClusterImagePolicy
	var namespaced []v1alpha1.ImagePolicy
	var exceptions []v1alpha1.ImagePolicyException
	seen := map[policy.Ref]string{}
	src := &fileSources{secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{}, tuf: r.tuf}
	for i := range docs {
		d := &docs[i]
		if r.readSource(d, src) {
			continue
		}
		if d.Object != nil && d.Object.GroupVersionKind().Group != v1alpha1.GroupVersion.Group &&
			(d.Object.GetKind() == policy.KindClusterImagePolicy || d.Object.GetKind() == policy.KindImagePolicy || d.Object.GetKind() == policy.KindImagePolicyException) {
			if group := d.Object.GroupVersionKind().Group; group != "" {
				// Another project's kind of the same name (sigstore's policy.sigstore.dev
				// ClusterImagePolicy): not imagegate's, so not applied.
				r.addNote(d, fmt.Sprintf("%s %q is %s's, not imagegate's (%s): skipped", d.Object.GetKind(), d.Object.GetName(), group, v1alpha1.GroupVersion))
				r.Summary.PolicyDocumentsSkipped++
				continue
			}
			// A policy without apiVersion: the apiserver would not take it, and skipping it
			// would check without it.
			r.addError(d, fmt.Sprintf("%s %q has apiVersion %q; imagegate policies are %s", d.Object.GetKind(), d.Object.GetName(), d.Object.GetAPIVersion(), v1alpha1.GroupVersion))
			continue
		}
		if d.Object == nil || d.Object.GroupVersionKind().Group != v1alpha1.GroupVersion.Group {
			// Kustomizations and other files next to the policies.
			r.Summary.PolicyDocumentsSkipped++
			continue
		}
		obj := d.Object
		if (obj.GetKind() == policy.KindImagePolicy || obj.GetKind() == policy.KindImagePolicyException) && obj.GetNamespace() == "" {
			obj.SetNamespace(DefaultNamespace)
		}
		if fieldErrs := v.Validate(ctx, obj); len(fieldErrs) > 0 {
			for _, fe := range fieldErrs {
				r.addError(d, fmt.Sprintf("%s %q is invalid: %s", obj.GetKind(), obj.GetName(), fe.Error()))
			}
			continue
		}
		ref := policy.Ref{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
		if ref.Kind == policy.KindClusterImagePolicy {
			ref.Namespace = ""
		}
		if first, dup := seen[ref]; dup {
			r.addError(d, fmt.Sprintf("%s is defined twice (first at %s): the one applied last would win in a cluster", ref, first))
			continue
		}
		seen[ref] = d.Location()
		var err error
		switch ref.Kind {
		case policy.KindClusterImagePolicy:
			var p v1alpha1.ClusterImagePolicy
			if err = runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &p); err == nil {
				cluster = append(cluster, p)
			}
		case policy.KindImagePolicy:
			var p v1alpha1.ImagePolicy
			if err = runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &p); err == nil {
				namespaced = append(namespaced, p)
			}
		case policy.KindImagePolicyException:
			// Exceptions count as the cluster counts them: an expired one exempts nothing
			// (at the time of the check), whatever the files say.
			var e v1alpha1.ImagePolicyException
			if err = runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &e); err == nil {
				exceptions = append(exceptions, e)
				if e.Spec.ExpiresAt != nil && !r.clock().Before(e.Spec.ExpiresAt.Time) {
					r.addNote(d, fmt.Sprintf("ImagePolicyException %s/%s expired at %s: it exempts nothing", e.Namespace, e.Name, e.Spec.ExpiresAt.UTC().Format(time.RFC3339)))
				}
			}
		}
		if err != nil {
			r.addError(d, fmt.Sprintf("%s: %v", ref, err))
		}
	}
	r.Summary.Policies = len(cluster) + len(namespaced)
	if r.Summary.Policies == 0 {
		if len(r.Errors) == 0 {
			where := slices.Clone(paths)
			if clusterDocs != nil {
				where = append(where, "the cluster")
			}
			r.Errors = append(r.Errors, InputError{Message: fmt.Sprintf("no ImagePolicy or ClusterImagePolicy in %s", strings.Join(where, ", "))})
		}
		return nil
	}
	opts := policy.Options{Exceptions: exceptions, Now: r.now}
	if !r.offline {
		// Keys, trusted roots and pull secrets come from the Secrets and ConfigMaps in the
		// policy files, as the manager reads them from its namespace.
		opts.Trust = verify.Compiler(src)
	}
	snap := policy.CompileWith(cluster, namespaced, opts)
	// The schema accepts a few patterns the engine's parser refuses; a cluster would mark such
	// a policy Ready=False and refuse what it covers. Here it is bad input.
	refs := make([]policy.Ref, 0, len(seen))
	for ref := range seen {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, b policy.Ref) int { return strings.Compare(a.String(), b.String()) })
	for _, ref := range refs {
		msg := snap.PolicyError(ref)
		if ref.Kind == policy.KindImagePolicyException {
			msg = snap.ExceptionError(ref)
		}
		if msg != "" {
			r.Errors = append(r.Errors, InputError{Location: seen[ref], Message: fmt.Sprintf("%s cannot be compiled: %s", ref, msg)})
		}
		for _, w := range snap.PolicyWarnings(ref) {
			r.Notes = append(r.Notes, InputError{Location: seen[ref], Message: fmt.Sprintf("%s: %s", ref, w)})
		}
	}
	return snap
}

// namespaceLabels returns the labels of a Namespace document, with the
// kubernetes.io/metadata.name label the apiserver sets on every Namespace.
func namespaceLabels(d *manifest.Document) (string, map[string]string, bool) {
	if d.Object == nil || d.Object.GroupVersionKind() != namespaceGVK {
		return "", nil, false
	}
	l := map[string]string{}
	for k, v := range d.Object.GetLabels() {
		l[k] = v
	}
	l[corev1.LabelMetadataName] = d.Object.GetName()
	return d.Object.GetName(), l, true
}

// pendingObject is a Pod or workload reduced to what a decision needs.
type pendingObject struct {
	result     ObjectResult
	podLabels  map[string]string
	images     []policy.Image
	breakGlass bool
}

// readWorkload reads a Pod or workload document; anything else is counted as skipped. Objects
// without a namespace go to namespace (DefaultNamespace when empty).
func (r *Report) readWorkload(scheme *runtime.Scheme, d *manifest.Document, namespace string, declared map[schema.GroupKind]string) (pendingObject, bool) {
	if d.Object == nil {
		r.Summary.Skipped++
		return pendingObject{}, false
	}
	gvk := d.Object.GroupVersionKind()
	tmpl, ok := r.templateOf(scheme, d, declared)
	if !ok {
		return pendingObject{}, false
	}
	ns := d.Object.GetNamespace()
	switch {
	case ns != "" && namespace != "" && ns != namespace:
		// kubectl apply -n refuses it too.
		r.addError(d, fmt.Sprintf("%s %q is in namespace %q, not %q (--namespace): kubectl apply -n %s refuses it", gvk.Kind, d.Object.GetName(), ns, namespace, namespace))
		return pendingObject{}, false
	case ns == "" && namespace != "":
		ns = namespace
	case ns == "":
		ns = DefaultNamespace
	}
	p := pendingObject{
		result: ObjectResult{
			File: d.File, Document: d.Index, Line: d.Line, Kind: gvk.Kind, Namespace: ns, Name: objectName(d.Object),
			location: d.Location(),
		},
		podLabels:  tmpl.Labels,
		images:     tmpl.Images(),
		breakGlass: policy.BreakGlassRequested(tmpl.Annotations),
	}
	if d.Item >= 0 {
		item := d.Item
		p.result.Item = &item
	}
	p.result.Images = make([]InventoryImage, len(p.images))
	for i, img := range p.images {
		p.result.Images[i] = InventoryImage{Field: img.Field, Image: img.Ref}
	}
	return p, true
}

// decide evaluates one object with the engine, exactly as the webhook builds its subject, and
// checks verify rules as the webhooks do for its Pods: tags resolved and pinned, signatures
// verified at the digest (or, with Offline, reported as not verified).
func (r *Report) decide(ctx context.Context, snap *policy.Snapshot, labels map[string]map[string]string, p *pendingObject) {
	res := p.result
	nsLabels, ok := labels[res.Namespace]
	if !ok {
		nsLabels = map[string]string{corev1.LabelMetadataName: res.Namespace}
	}
	sub := policy.Subject{Namespace: res.Namespace, NamespaceLabels: nsLabels, PodLabels: p.podLabels, Images: p.images, BreakGlass: p.breakGlass, VerifyTemplates: true}
	var decision policy.Decision
	if r.offline {
		decision = verify.Decide(ctx, snap, &sub, nil, verify.Steps{}).Decision
		for _, img := range snap.SkipVerify(&decision) {
			res.NotVerified = append(res.NotVerified, NotVerified{Field: img.Field, Image: img.Ref, Reason: "--offline: verify rules skipped"})
		}
	} else {
		// What the mutating and the validating webhook do with verify rules: pin each
		// unpinned tag to the digest it names now, then verify the signatures at the digests.
		out := verify.Decide(ctx, snap, &sub, r.verifier, verify.Steps{Pin: true, Verify: true})
		decision = out.Decision
		for _, p := range out.Pins {
			if p.Err == nil {
				continue
			}
			// Left unpinned, the image is refused as the webhook refuses it. The engine's
			// reason speaks of the mutating webhook, which is not here: the refusal says what
			// failed instead, as the mutating webhook's would.
			reason := "it could not be pinned to a digest: " + p.Err.Error()
			res.NotVerified = append(res.NotVerified, NotVerified{Field: p.Image.Field, Image: p.Image.Ref, Reason: "could not be pinned to a digest: " + p.Err.Error()})
			for i := range decision.Violations {
				if v := &decision.Violations[i]; v.Field == p.Image.Field && v.Policy == p.Rule.Policy && v.Reason == policy.ReasonUnpinned {
					v.Reason = reason
				}
			}
		}
		for _, c := range out.Checked {
			res.Verified = append(res.Verified, VerifiedImage{
				Field: c.Image.Field, Image: c.Image.Ref, Digest: c.Digest, Policy: policyRef(c.Rule.Policy),
				Verified: c.Reason == "", Reason: c.Reason, ScanExpires: c.ScanExpires, Attestations: c.Attestations,
			})
		}
	}
	res.Decision = decision.Outcome()
	for i := range decision.Violations {
		v := &decision.Violations[i]
		res.Violations = append(res.Violations, Violation{
			Mode:       string(v.Mode),
			Policy:     policyRef(v.Policy),
			Rule:       string(v.Rule),
			Field:      v.Field,
			Image:      v.Image,
			Normalized: v.Normalized,
			Message:    v.Message(),
		})
	}
	for i := range decision.Exempted {
		e := &decision.Exempted[i]
		res.Exempted = append(res.Exempted, Exempted{
			Exception: e.Exception.Namespace + "/" + e.Exception.Name, Expires: e.Expires,
			Policy: policyRef(e.Violation.Policy), Rule: string(e.Violation.Rule), Field: e.Violation.Field, Image: e.Violation.Image,
			Message: e.Message(),
		})
	}
	res.Notes = decision.NoteMessages()
	r.Summary.Checked++
	switch res.Decision {
	case policy.DecisionDenied:
		r.Summary.Denied++
	case policy.DecisionAllowedWithWarnings:
		r.Summary.Warned++
		r.Summary.Admitted++
	default:
		r.Summary.Admitted++
	}
	r.Objects = append(r.Objects, res)
}

// templateOf returns where the document's object keeps the pod spec it runs: a Pod's own, a
// workload's template, or one --pod-template declared. false: the object is skipped (counted,
// with a note when it has a pod template nobody declared) or bad input (reported).
func (r *Report) templateOf(scheme *runtime.Scheme, d *manifest.Document, declared map[schema.GroupKind]string) (podspec.Template, bool) {
	gvk := d.Object.GroupVersionKind()
	if path, ok := declared[gvk.GroupKind()]; ok {
		t, found, err := podspec.TemplateAt(d.Object.Object, path)
		if err != nil || !found {
			r.addError(d, fmt.Sprintf("%s %q has no pod template at %s (--pod-template): %v", gvk.Kind, d.Object.GetName(), path, orMissing(err)))
			return podspec.Template{}, false
		}
		return t, true
	}
	if gvk != podGVK && !podspec.WorkloadKind(gvk) {
		if served, ok := podspec.ServedVersion(gvk); ok && gvk.GroupVersion() != served {
			// An old API version (extensions/v1beta1 Deployment, batch/v1beta1 CronJob): the
			// apiserver refuses it, so it must not pass here as "skipped".
			r.addError(d, fmt.Sprintf("%s %q has apiVersion %q, which Kubernetes does not serve: use %s", gvk.Kind, d.Object.GetName(), d.Object.GetAPIVersion(), served))
			return podspec.Template{}, false
		}
		if hasPodTemplate(d.Object) {
			r.addNote(d, fmt.Sprintf("%s %s %q has a pod template but is not a Kubernetes workload: its images are not checked here (--pod-template %s.%s=spec.template declares it); the webhook checks its Pods when they are created", d.Object.GetAPIVersion(), gvk.Kind, d.Object.GetName(), gvk.Kind, gvk.Group))
		}
		r.Summary.Skipped++
		return podspec.Template{}, false
	}
	typed, err := scheme.New(gvk)
	if err != nil {
		r.addError(d, err.Error())
		return podspec.Template{}, false
	}
	// Through JSON, as the apiserver decodes a request, so that an error names the field.
	data, err := d.Object.MarshalJSON()
	if err == nil {
		err = kjson.UnmarshalCaseSensitivePreserveInts(data, typed)
	}
	if err != nil {
		r.addError(d, fmt.Sprintf("%s %q cannot be read as %s: %v", gvk.Kind, d.Object.GetName(), gvk.GroupVersion(), err))
		return podspec.Template{}, false
	}
	tmpl, _ := podspec.TemplateOf(typed)
	return tmpl, true
}

func orMissing(err error) error {
	if err == nil {
		return errors.New("nothing there")
	}
	return err
}

// clock is the time of the check.
func (r *Report) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// objectName is the object's name, or its generateName followed by "*" (the apiserver adds
// the rest).
func objectName(obj *unstructured.Unstructured) string {
	if name := obj.GetName(); name != "" || obj.GetGenerateName() == "" {
		return name
	}
	return obj.GetGenerateName() + "*"
}

// hasPodTemplate reports whether an object of another kind keeps a pod template where the
// workloads keep theirs (spec.template.spec, or a CronJob's spec.jobTemplate.spec.template.spec):
// Argo Rollouts, OpenKruise and the like.
func hasPodTemplate(obj *unstructured.Unstructured) bool {
	for _, path := range [][]string{{"spec", "template", "spec", "containers"}, {"spec", "jobTemplate", "spec", "template", "spec", "containers"}} {
		if _, found, _ := unstructured.NestedSlice(obj.Object, path...); found {
			return true
		}
	}
	return false
}

// fileSources are the Secrets and ConfigMaps of the policy files, standing for those of
// imagegate's namespace.
type fileSources struct {
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
	// kms holds the KMS keys fetched in this run, with the caller's cloud identity.
	kms map[string]kmsResult
	// tuf configures the TUF clients; roots holds the trusted roots fetched in this run.
	tuf   verify.TUFOptions
	roots map[string]tufResult
}

type tufResult struct {
	root []byte
	err  error
}

// TUFRoot fetches a TUF repository's trusted_root.json, once per run (verify.TUFSource).
func (f *fileSources) TUFRoot(mirror string, initialRoot []byte) ([]byte, error) {
	key := mirror + "\x00" + string(initialRoot)
	if r, ok := f.roots[key]; ok {
		return r.root, r.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root, err := verify.FetchTUFRoot(ctx, mirror, initialRoot, f.tuf)
	if err != nil {
		err = fmt.Errorf("the trusted root of %s could not be fetched from its TUF repository: %w", mirror, err)
	}
	if f.roots == nil {
		f.roots = map[string]tufResult{}
	}
	f.roots[key] = tufResult{root, err}
	return root, err
}

type kmsResult struct {
	key crypto.PublicKey
	err error
}

// KMSKey fetches the public key of a KMS reference, once per run (verify.KMSSource).
func (f *fileSources) KMSKey(ref string) (crypto.PublicKey, error) {
	if r, ok := f.kms[ref]; ok {
		return r.key, r.err
	}
	if err := verify.ValidateKMSReference(ref); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, err := verify.FetchKMSKey(ctx, ref)
	if err != nil {
		err = fmt.Errorf("the public key of %s could not be fetched from the KMS: %w", ref, err)
	}
	if f.kms == nil {
		f.kms = map[string]kmsResult{}
	}
	f.kms[ref] = kmsResult{key, err}
	return key, err
}

func (f *fileSources) Secret(name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w in the --policy files", verify.ErrNotFound)
}

func (f *fileSources) ConfigMap(name string) (*corev1.ConfigMap, error) {
	if c, ok := f.configMaps[name]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("%w in the --policy files", verify.ErrNotFound)
}

// readSource keeps a Secret or ConfigMap of the policy files, which verify rules may name.
func (r *Report) readSource(d *manifest.Document, src *fileSources) bool {
	if d.Object == nil || d.Object.GroupVersionKind().Group != "" || d.Object.GetAPIVersion() != "v1" {
		return false
	}
	var err error
	switch d.Object.GetKind() {
	case "Secret":
		var s corev1.Secret
		if err = runtime.DefaultUnstructuredConverter.FromUnstructured(d.Object.Object, &s); err == nil {
			// stringData is what people write in files; the apiserver folds it into data.
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			src.secrets[s.Name] = &s
		}
	case "ConfigMap":
		var c corev1.ConfigMap
		if err = runtime.DefaultUnstructuredConverter.FromUnstructured(d.Object.Object, &c); err == nil {
			src.configMaps[c.Name] = &c
		}
	default:
		return false
	}
	if err != nil {
		r.addError(d, fmt.Sprintf("%s %q: %v", d.Object.GetKind(), d.Object.GetName(), err))
	}
	return true
}

func (r *Report) addError(d *manifest.Document, msg string) {
	r.Errors = append(r.Errors, InputError{File: d.File, Document: d.Index, Line: d.Line, Location: d.Location(), Message: msg})
}

// addNote records something the user should know that is not an error: what was skipped
// that might look as if it were checked.
func (r *Report) addNote(d *manifest.Document, msg string) {
	r.Notes = append(r.Notes, InputError{File: d.File, Document: d.Index, Line: d.Line, Location: d.Location(), Message: msg})
}

func (r *Report) addInputErrors(errs []error) {
	for _, err := range errs {
		ie := InputError{Message: err.Error()}
		var me *manifest.Error
		if errors.As(err, &me) {
			ie = InputError{File: me.File, Document: me.Index, Line: me.Line, Location: strings.TrimSuffix(me.Error(), ": "+me.Err.Error()), Message: me.Err.Error()}
		}
		r.Errors = append(r.Errors, ie)
	}
}
