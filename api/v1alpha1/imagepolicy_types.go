package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PolicyMode says what a policy does with a Pod that breaks its rules.
// +kubebuilder:validation:Enum=Enforce;Warn;Audit
type PolicyMode string

const (
	// ModeEnforce denies the request.
	ModeEnforce PolicyMode = "Enforce"
	// ModeWarn admits the request and returns an admission warning, which kubectl prints.
	ModeWarn PolicyMode = "Warn"
	// ModeAudit admits the request silently and only records the violation.
	ModeAudit PolicyMode = "Audit"
)

// Enforcement says when an Enforce policy starts refusing.
// +kubebuilder:validation:Enum=Immediately;AfterCleanAudit
type Enforcement string

const (
	// EnforceImmediately refuses from the moment the policy is in force.
	EnforceImmediately Enforcement = "Immediately"
	// EnforceAfterCleanAudit acts as Audit until an audit pass finds no running Pod that the
	// policy would refuse.
	EnforceAfterCleanAudit Enforcement = "AfterCleanAudit"
)

// Reasons of status.enforcement.
const (
	// ReasonAwaitingCleanAudit: the policy acts as Audit until an audit pass finds no
	// running Pod it would refuse.
	ReasonAwaitingCleanAudit = "AwaitingCleanAudit"
	// ReasonCleanAudit: an audit pass found no running Pod the policy would refuse, so it
	// refuses.
	ReasonCleanAudit = "CleanAudit"
)

// ImagePattern is an image pattern: an image reference in which a path segment may
// contain `*` (any characters within that one segment, never `/`) or be `**` (any number of
// segments, including none). The registry host is literal and matched as a whole host with
// its port; a pattern without a registry means Docker Hub, exactly as for images (`nginx`
// is `docker.io/library/nginx`). A pattern without tag or digest matches every tag and
// digest of the repositories it names; `:tag` matches only that tag; `@sha256:...` only
// that digest.
//
// The registry is compared in its canonical spelling: `ghcr.io:443` is `ghcr.io`,
// `registry-1.docker.io` and `index.docker.io` are `docker.io`, an IPv6 address is written in
// its shortest form; a pattern written in another spelling means the canonical one.
//
// The grammar is that of github.com/distribution/reference with the globs added; the Go
// side (internal/imageref) checks the same rules with the real parser, and a test ties the two.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=512
// +kubebuilder:validation:XValidation:rule="self.matches('^(?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:[.](?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|[[][a-fA-F0-9:]+[]])(?::[0-9]+)?/)?[a-z0-9*]+(?:(?:[._]|__|[-]+)[a-z0-9*]+)*(?:/[a-z0-9*]+(?:(?:[._]|__|[-]+)[a-z0-9*]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}))?$')",message="must be an image pattern such as ghcr.io/acme/*, docker.io/library/nginx:1.27 or registry.corp:5000/** (lowercase repository; globs * and ** only in the repository path; no spaces; a digest is sha256: and 64 lowercase hex digits)"
// +kubebuilder:validation:XValidation:rule="!self.matches('^[^/]*[*][^/]*/') || !self.matches('^(?:[^/]*[.:][^/]*|localhost)/')",message="a registry host cannot contain * or **: name the registry exactly, for example ghcr.io/acme/*"
// +kubebuilder:validation:XValidation:rule="!self.matches('[^/][*][*]|[*][*][^/:@]')",message="** must be a whole path segment, for example ghcr.io/acme/**"
// +kubebuilder:validation:XValidation:rule="!self.matches('^(sha256|sha384|sha512|blake3):')",message="a pattern names repositories, not image IDs (an algorithm, a colon and hex digits): for example docker.io/library/nginx@sha256:..."
type ImagePattern string

// ImageRules lists the image patterns that a policy allows and denies.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="has(self.allow) || has(self.deny)",message="images must set allow or deny"
type ImageRules struct {
	// allow lists the image patterns that may run. When set, every image that the policy
	// checks must match at least one of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Allow []ImagePattern `json:"allow,omitempty"`

	// deny lists the image patterns that may not run. A match denies, even when an allow
	// pattern also matches.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Deny []ImagePattern `json:"deny,omitempty"`
}

// TagName is an image tag, such as `latest` or `1.27`.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`
type TagName string

// TagRules restricts image tags. Tag rules do not apply to an image pinned by digest: the
// runtime pulls the digest and ignores the tag.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="has(self.deny) || (has(self.requireTag) && self.requireTag)",message="tags must set deny or requireTag: true"
type TagRules struct {
	// deny lists tags that are refused. An image with neither tag nor digest runs as
	// `:latest`, so `deny: [latest]` refuses it too.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Deny []TagName `json:"deny,omitempty"`

	// requireTag refuses images that carry neither a tag nor a digest.
	// +optional
	RequireTag *bool `json:"requireTag,omitempty"`
}

// ImagePolicySpec is the set of rules shared by ImagePolicy and ClusterImagePolicy.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="!has(self.enforcement) || self.enforcement == 'Immediately' || !has(self.mode) || self.mode == 'Enforce'",fieldPath=".enforcement",message="enforcement AfterCleanAudit only applies to mode Enforce"
// +kubebuilder:validation:XValidation:rule="has(self.images) || has(self.tags) || (has(self.requireDigest) && self.requireDigest) || has(self.verify)",message="the policy restricts nothing: set at least one of images.allow, images.deny, tags.deny, tags.requireTag, requireDigest or verify"
type ImagePolicySpec struct {
	// mode says what happens to a Pod that breaks this policy: `Enforce` (the default)
	// denies it; `Warn` admits it and returns a warning that kubectl prints; `Audit` admits
	// it silently and only records the violation (audit annotation and status).
	// +optional
	// +kubebuilder:default=Enforce
	Mode PolicyMode `json:"mode,omitempty"`

	// enforcement says when an `Enforce` policy starts refusing: `Immediately` (the
	// default), or `AfterCleanAudit`: the policy acts as `Audit` until a background audit
	// pass finds no running Pod it would refuse, then refuses from then on
	// (status.enforcement says which is in force and why). Each change of the spec waits for
	// a clean audit again. Only with mode Enforce.
	// +optional
	Enforcement Enforcement `json:"enforcement,omitempty"`

	// namespaceSelector picks the namespaces whose Pods this policy covers, by namespace
	// labels (`kubernetes.io/metadata.name` holds the name). Empty or unset: every namespace
	// that the webhook sees. Only for ClusterImagePolicy: an ImagePolicy covers its own
	// namespace.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="each matchExpressions operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// podSelector picks the Pods this policy covers, by Pod labels. Empty or unset: every
	// Pod in the namespaces the policy covers.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="each matchExpressions operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// images allows and denies images by pattern.
	// +optional
	Images ImageRules `json:"images,omitzero"`

	// tags refuses tags by name, or images without a tag.
	// +optional
	Tags TagRules `json:"tags,omitzero"`

	// requireDigest refuses every image that is not pinned by digest (`@sha256:...`).
	// +optional
	RequireDigest *bool `json:"requireDigest,omitempty"`

	// exemptImages lists image patterns that this policy does not check at all (for example
	// a vendor image that must stay on `:latest`). Other policies still check them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	ExemptImages []ImagePattern `json:"exemptImages,omitempty"`

	// allowBreakGlass lets a Pod that breaks this Enforce policy be admitted in an emergency
	// when it carries an annotation whose key ends in `.image-policy.k8s.io/break-glass` with
	// the value "true" (the ImagePolicyWebhook convention, e.g.
	// `alpha.image-policy.k8s.io/break-glass`). Anyone who can create the Pod can set the
	// annotation, so leave this off unless every such user may override the policy. An
	// admitted break-glass Pod gets a warning naming the policy and the audit annotation
	// `break-glass`. Default: false.
	// +optional
	AllowBreakGlass *bool `json:"allowBreakGlass,omitempty"`

	// breakGlassRequiresException limits allowBreakGlass to the Pods that an active
	// ImagePolicyException naming this policy selects (by namespace and podSelector): the
	// annotation then works only where someone allowed to grant exceptions has said so.
	// Default: false.
	// +optional
	BreakGlassRequiresException *bool `json:"breakGlassRequiresException,omitempty"`

	// allowExceptions lets ImagePolicyExceptions exempt Pods from this policy. false: no
	// exception applies to it (an exception that names it says so in its status). Default:
	// true.
	// +optional
	AllowExceptions *bool `json:"allowExceptions,omitempty"`

	// verify makes imagegate look at the image itself in its registry: each image it covers
	// must carry a signature by one of the trusted signers, checked at the digest the Pod
	// runs. A tag is resolved to its digest and the Pod is pinned to it (`tag@digest`) by
	// imagegate's mutating webhook, so an admitted Pod runs exactly the verified bytes.
	// +optional
	Verify VerifyRules `json:"verify,omitzero"`

	// checkWorkloads also checks the pod templates of Deployments, ReplicaSets, StatefulSets,
	// DaemonSets, Jobs, CronJobs and ReplicationControllers when they are created or updated,
	// so that `kubectl apply` reports a disallowed image at once rather than as a ReplicaSet
	// event later. The Pods are checked either way. Default: true.
	// +optional
	// +kubebuilder:default=true
	CheckWorkloads *bool `json:"checkWorkloads,omitempty"`
}

const (
	// ConditionReady is True when the policy is compiled and in force.
	ConditionReady = "Ready"
	// ReasonCompiled says the policy is compiled and in force.
	ReasonCompiled = "Compiled"
	// ReasonInvalid says the policy could not be compiled; the message says why.
	ReasonInvalid = "Invalid"
	// ConditionInAPIServer is set while the manager runs with --admission-policies: True when
	// the kube-apiserver decides the policy's name rules itself (ValidatingAdmissionPolicies),
	// False when the webhook does (the message says why).
	ConditionInAPIServer = "InAPIServer"
	// ReasonAdmissionPolicy says the name rules are in ValidatingAdmissionPolicies.
	ReasonAdmissionPolicy = "AdmissionPolicy"
	// ReasonWebhook says the name rules stay in the webhook.
	ReasonWebhook = "Webhook"
	// ReasonNoNameRules says the policy has no name rule (only verify rules, which need the
	// webhook).
	ReasonNoNameRules = "NoNameRules"
)

// ImagePolicyStatus is the observed state of a policy.
// +kubebuilder:validation:MinProperties=1
type ImagePolicyStatus struct {
	// conditions holds `Ready`: True when the policy is in force, False with reason
	// `Invalid` and a message when it cannot be compiled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation that the conditions describe.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// audit is the result of the latest background audit: the Pods already running (or
	// pending) that break this policy, whatever its mode. It shows what switching an `Audit`
	// policy to `Enforce` would refuse.
	// +optional
	Audit *AuditStatus `json:"audit,omitempty"`

	// enforcement says, for a policy with enforcement AfterCleanAudit, which mode is in
	// force for the current generation of the spec, and why. The audit writes it.
	// +optional
	Enforcement *EnforcementStatus `json:"enforcement,omitempty"` //nolint:kubeapilinter // absent (nil) for a policy that does not wait for a clean audit; when set, every field is required

}

// EnforcementStatus is the mode in force of a policy that waits for a clean audit.
type EnforcementStatus struct {
	// mode is the mode in force: Audit while waiting, Enforce after a clean audit pass.
	// +required
	Mode PolicyMode `json:"mode,omitempty"`

	// reason is AwaitingCleanAudit or CleanAudit.
	// +required
	// +kubebuilder:validation:Enum=AwaitingCleanAudit;CleanAudit
	Reason string `json:"reason,omitempty"`

	// message says why, in words: what the latest audit pass found.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`

	// observedGeneration is the metadata.generation of the spec this applies to: a newer
	// spec waits for a clean audit again.
	// +required
	// +kubebuilder:validation:Minimum=1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// lastTransitionTime is when mode last changed.
	// +required
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitzero"`
}

// AuditStatus is what one background audit found for one policy.
type AuditStatus struct {
	// violations is the number of Pods that break the policy.
	// +required
	// +kubebuilder:validation:Minimum=0
	Violations int32 `json:"violations"`

	// lastScanTime is when the audit ran.
	// +required
	LastScanTime metav1.Time `json:"lastScanTime"`

	// samples are some of the violations: the first ones by namespace, Pod and field, so
	// that the same cluster always shows the same sample.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	Samples []AuditSample `json:"samples,omitempty"`
}

// AuditSample is one violation found by the audit.
type AuditSample struct {
	// namespace is the namespace of the Pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// pod is the name of the Pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod,omitempty"`

	// container is the name of the container (or of the image volume) whose image breaks the
	// rule; empty for a violation about the whole Pod (an invalid policy).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Container string `json:"container,omitempty"`

	// image is the image as the Pod spec writes it, cut to 1,024 characters; empty for a
	// violation about the whole Pod.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// rule is the broken rule, as the policy spells it (images.allow, tags.deny, ...).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Rule string `json:"rule,omitempty"`
}

// Bounds of AuditSample's strings, which the audit cuts values to.
const (
	AuditSampleMaxContainer = 253
	AuditSampleMaxImage     = 1024
)

// ImagePolicy restricts the images that Pods in its own namespace may run. It can only add
// restrictions to the ClusterImagePolicies that cover the namespace, never loosen them.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=imgpol
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="In force",type=string,priority=1,JSONPath=`.status.enforcement.mode`,description="The mode in force of a policy that waits for a clean audit (enforcement AfterCleanAudit)"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Violations",type=integer,JSONPath=`.status.audit.violations`,description="Pods that break the policy, as of the latest audit"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec.namespaceSelector)",fieldPath=".spec.namespaceSelector",message="namespaceSelector is not allowed on ImagePolicy, which covers only its own namespace: use a ClusterImagePolicy"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.verify) || (!has(self.spec.verify.pullSecrets) && self.spec.verify.signers.all(s, !has(s.key) || !has(s.key.secretRef)))",fieldPath=".spec.verify",message="an ImagePolicy cannot use Secrets of imagegate's namespace (verify.pullSecrets, key.secretRef): write the public key inline, or ask for a ClusterImagePolicy"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.verify) || !has(self.spec.verify.cloudCredentials)",fieldPath=".spec.verify",message="an ImagePolicy cannot use cloudCredentials, the manager's cloud identities: ask for a ClusterImagePolicy"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.verify) || !has(self.spec.verify.tufRoots)",fieldPath=".spec.verify",message="an ImagePolicy cannot use tufRoots, which make the manager fetch from the repositories they name: use trustedRoot, or ask for a ClusterImagePolicy"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.verify) || self.spec.verify.signers.all(s, !has(s.key) || !has(s.key.kms))",fieldPath=".spec.verify",message="an ImagePolicy cannot use KMS keys (key.kms), which the manager reads with its own cloud identity: write the public key inline, or ask for a ClusterImagePolicy"
type ImagePolicy struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec holds the rules.
	// +required
	Spec ImagePolicySpec `json:"spec,omitzero"`

	// status is written by imagegate.
	// +optional
	Status ImagePolicyStatus `json:"status,omitzero"`
}

// ImagePolicyList is a list of ImagePolicy.
// +kubebuilder:object:root=true
type ImagePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImagePolicy `json:"items"`
}

// ClusterImagePolicy restricts the images that Pods may run in the namespaces its
// namespaceSelector picks (every namespace when it is empty).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cimgpol
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="In force",type=string,priority=1,JSONPath=`.status.enforcement.mode`,description="The mode in force of a policy that waits for a clean audit (enforcement AfterCleanAudit)"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Violations",type=integer,JSONPath=`.status.audit.violations`,description="Pods that break the policy, as of the latest audit"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterImagePolicy struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec holds the rules.
	// +required
	Spec ImagePolicySpec `json:"spec,omitzero"`

	// status is written by imagegate.
	// +optional
	Status ImagePolicyStatus `json:"status,omitzero"`
}

// ClusterImagePolicyList is a list of ClusterImagePolicy.
// +kubebuilder:object:root=true
type ClusterImagePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterImagePolicy `json:"items"`
}
