package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImagePolicyExceptionSpec says which Pods and images of its namespace are exempt from which
// policies or rules, why, and until when.
type ImagePolicyExceptionSpec struct {
	// reason says why the exception exists (a ticket, the vendor's promise); it is shown with
	// every Pod it admits.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`

	// expiresAt is when the exception stops applying, everywhere at once: the webhooks, the
	// ImageReview endpoint, the audit and `imagegate check`. It must be in the future when
	// the exception is created. Unset: it never expires (prefer an expiry).
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// podSelector picks the Pods of the namespace the exception covers, by label. Unset:
	// every Pod of the namespace.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="each matchExpressions operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// images picks the images the exception covers, by pattern (the policies' grammar).
	// Unset: every image of the Pods it covers.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Images []ImagePattern `json:"images,omitempty"`

	// policies names the policies (and optionally the rules of them) the exception exempts
	// from. A policy with allowExceptions: false cannot be exempted from.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	//nolint:kubeapilinter // arrayofstruct: each entry is a policy reference with its own optional rule list; a map keyed by kind and name has no natural single key.
	Policies []ExceptedPolicy `json:"policies,omitempty"`

	// ignore lists vulnerability IDs that the attestation rules of the named policies do
	// not count for the Pods and images the exception covers, until it expires. An exception
	// with ignore entries does not exempt from verify rules as a whole: the signature and
	// every other attestation are still checked, and only these findings do not refuse.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	Ignore []string `json:"ignore,omitempty"`

	// allowBreakGlass makes the exception a break-glass grant: Pods it selects that carry the
	// break-glass annotation may override the policies it names, for the rules it names and
	// the images it covers, where those policies set allowBreakGlass and
	// breakGlassRequiresException. Such an exception exempts nothing by itself (the Pod must
	// ask for break-glass, and is admitted with its warning). Only an exception with
	// allowBreakGlass unlocks break-glass: one that names a policy to ignore findings or to
	// exempt a rule never does. Default: false.
	// +optional
	AllowBreakGlass *bool `json:"allowBreakGlass,omitempty"`
}

// ExceptedRule is a rule of a policy, as violations name it.
// +kubebuilder:validation:Enum="images.allow";"images.deny";"tags.deny";"tags.requireTag";requireDigest;verify
type ExceptedRule string

// ExceptedPolicy names a policy, and optionally which of its rules, an exception exempts from.
type ExceptedPolicy struct {
	// kind is ClusterImagePolicy or ImagePolicy (an ImagePolicy of the exception's namespace).
	// +required
	// +kubebuilder:validation:Enum=ClusterImagePolicy;ImagePolicy
	Kind string `json:"kind,omitempty"`

	// name is the policy's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`

	// rules limits the exception to these rules of the policy. Unset: all of them. The
	// rules are images.allow, images.deny, tags.deny, tags.requireTag, requireDigest and
	// verify (signatures and attestations).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	Rules []ExceptedRule `json:"rules,omitempty"`
}

// Condition types and reasons of an exception's status.
const (
	// ConditionActive is True while the exception applies.
	ConditionActive = "Active"
	// ReasonActive: the exception applies.
	ReasonActive = "Active"
	// ReasonExpired: its expiresAt has passed.
	ReasonExpired = "Expired"
	// ReasonForbidden: a policy it names has allowExceptions: false.
	ReasonForbidden = "Forbidden"
)

// ImagePolicyExceptionStatus is what imagegate observed of an exception.
// +kubebuilder:validation:MinProperties=1
type ImagePolicyExceptionStatus struct {
	// conditions holds Active: True while the exception applies, False with reason Expired
	// once expiresAt has passed. A message names the policies that forbid exceptions.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// pods is how many running Pods relied on the exception at the latest audit (would
	// break a policy without it).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Pods *int32 `json:"pods,omitempty"`

	// lastAuditTime is when the audit counted them.
	// +optional
	LastAuditTime *metav1.Time `json:"lastAuditTime,omitempty"`
}

// ImagePolicyException exempts, within its own namespace, chosen Pods and images from named
// policies or rules of them, with a reason and an expiry. Who may create one is RBAC on this
// kind: imagegate's shipped roles let namespace viewers, editors and admins read exceptions,
// and only whoever a cluster admin grants imagegate-exception-granter may write them.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=imgpolex
// +kubebuilder:printcolumn:name="Policies",type=string,JSONPath=`.spec.policies[*].name`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.spec.expiresAt`
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.conditions[?(@.type=="Active")].status`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.pods`,description="Running Pods that rely on the exception, as of the latest audit"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImagePolicyException struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec says what is exempt, why and until when.
	// +required
	Spec ImagePolicyExceptionSpec `json:"spec,omitzero"`

	// status is written by imagegate.
	// +optional
	Status ImagePolicyExceptionStatus `json:"status,omitzero"`
}

// ImagePolicyExceptionList is a list of ImagePolicyException.
// +kubebuilder:object:root=true
type ImagePolicyExceptionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImagePolicyException `json:"items"`
}
