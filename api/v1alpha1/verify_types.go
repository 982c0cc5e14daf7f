package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// The verify section of a policy: signers, trust material and attestation rules.

// TransparencyLogPolicy says whether a signature must be recorded in a transparency log.
// +kubebuilder:validation:Enum=Required;Skip
type TransparencyLogPolicy string

const (
	// TransparencyLogRequired accepts only signatures with a transparency log entry (Rekor)
	// that the trusted root vouches for, verified offline from the entry's signed timestamp.
	TransparencyLogRequired TransparencyLogPolicy = "Required"
	// TransparencyLogSkip accepts signatures without a transparency log entry. Only for
	// private deployments that sign with keys and run no log: a stolen key then signs
	// without a public trace.
	TransparencyLogSkip TransparencyLogPolicy = "Skip"
)

// VerifyRules says which images must be signed, and by whom.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="self.transparencyLog == 'Skip' || has(self.trustedRoot) || has(self.tufRoots) || self.signers.all(s, has(s.notation))",message="a transparency log is required (the default), so trustedRoot must name the ConfigMap holding trusted_root.json (or tufRoots a TUF repository); or set transparencyLog: Skip for keys without a log"
// +kubebuilder:validation:XValidation:rule="!self.signers.exists(s, has(s.keyless)) || has(self.trustedRoot) || has(self.tufRoots)",message="keyless signers need trustedRoot: the ConfigMap holding trusted_root.json (cosign trusted-root create writes it), or tufRoots"
// +kubebuilder:validation:XValidation:rule="!has(self.attestations) || self.attestations.all(a, !has(a.signers) || a.signers.all(n, self.signers.exists(s, s.name == n)))",message="each attestations[].signers entry must name one of verify.signers"
// +kubebuilder:validation:XValidation:rule="!has(self.requiredSigners) || self.requiredSigners <= size(self.signers)",message="requiredSigners cannot be more than the number of signers"
type VerifyRules struct {
	// images lists the image patterns that must be signed. Unset: every image the policy
	// checks (exemptImages are not checked).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Images []ImagePattern `json:"images,omitempty"`

	// signers are the trusted signers: a signature by any one of them suffices.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Signers []Signer `json:"signers,omitempty"`

	// requiredSigners is how many different signers must each have signed the image (the
	// release key and the security team's key, say). Default 1: a signature by any one
	// signer suffices. Attestations still need one signature by a signer their rule accepts.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	RequiredSigners int32 `json:"requiredSigners,omitempty"`

	// transparencyLog is `Required` (the default): a signature counts only with a
	// transparency log entry that the trusted root vouches for. `Skip` accepts signatures
	// without one, for private deployments that sign with keys and run no log.
	// +optional
	// +kubebuilder:default=Required
	TransparencyLog TransparencyLogPolicy `json:"transparencyLog,omitempty"`

	// trustedRoot names the ConfigMap, in imagegate's namespace, whose key holds a
	// `trusted_root.json` (the file `cosign trusted-root create` writes): the Fulcio, Rekor
	// and timestamp authority keys that keyless signatures and transparency log entries are
	// checked against. Nothing contacts a TUF service at admission.
	// +optional
	TrustedRoot ConfigMapKeyReference `json:"trustedRoot,omitzero"`

	// tufRoots are trusted roots kept fresh from TUF repositories (Sigstore's public
	// instance, GitHub's, your own), besides trustedRoot or instead of it: the manager
	// fetches each repository's trusted_root.json in the background, following its signed
	// root rotations from the initial root.json given here, and refreshes it every 10
	// minutes. Nothing contacts a TUF repository at admission. Only on ClusterImagePolicy.
	// +optional
	// +listType=map
	// +listMapKey=mirror
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	TUFRoots []TUFRoot `json:"tufRoots,omitempty"`

	// pullSecrets names Secrets of type kubernetes.io/dockerconfigjson in imagegate's
	// namespace whose credentials imagegate uses to read the images and their signatures.
	// Unset: the manager's image credential providers where they match the registry, else
	// anonymous access (public images). Only on ClusterImagePolicy.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	PullSecrets []ObjectName `json:"pullSecrets,omitempty"`

	// cloudCredentials are cloud identities of the manager that this rule also reads its
	// registries with: after its pullSecrets, before the manager's defaults
	// (--cloud-registry-credentials, which a rule with pullSecrets does not use): ECR (the AWS SDK's chain: IRSA, EKS Pod Identity),
	// Google (application default credentials: GKE Workload Identity), ACR (Azure workload
	// identity exchanged for an ACR refresh token). Only on ClusterImagePolicy.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	CloudCredentials []CloudCredentialProvider `json:"cloudCredentials,omitempty"`

	// attestations are the signed attestations each covered image must also carry (`cosign
	// attest`), checked at the digest the Pod runs: a vulnerability scan with limits on its
	// findings and its age, or any other predicate (for example SLSA provenance) that must
	// exist and be signed by the policy's signers. Every listed attestation is required.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Attestations []AttestationRule `json:"attestations,omitempty"`

	// indexTrust says how an image index (a multi-architecture image) is trusted. Index
	// (the default): the index itself must be signed, and its attestations attached to it.
	// Platforms: each platform manifest the index lists for a platform the cluster's nodes
	// run (every platform it lists when no node is known) must be signed and carry the
	// attestations, which are looked up on that manifest. Either: Index or Platforms. An
	// image that is not an index is checked as itself in every mode.
	// +optional
	IndexTrust IndexTrust `json:"indexTrust,omitempty"`
}

// IndexTrust is how an image index is trusted.
// +kubebuilder:validation:Enum=Index;Platforms;Either
type IndexTrust string

// Ways to trust an image index.
const (
	IndexTrustIndex     IndexTrust = "Index"
	IndexTrustPlatforms IndexTrust = "Platforms"
	IndexTrustEither    IndexTrust = "Either"
)

// CloudCredentialProvider is a cloud whose registries imagegate reads with the manager's
// identity.
// +kubebuilder:validation:Enum=ECR;Google;ACR
type CloudCredentialProvider string

// Cloud credential providers.
const (
	CloudECR    CloudCredentialProvider = "ECR"
	CloudGoogle CloudCredentialProvider = "Google"
	CloudACR    CloudCredentialProvider = "ACR"
)

// IsSet reports whether the policy has a verify section.
func (v *VerifyRules) IsSet() bool {
	return len(v.Signers) > 0 || len(v.Images) > 0 || v.TransparencyLog != "" || v.TrustedRoot.Name != "" || len(v.TUFRoots) > 0 || len(v.PullSecrets) > 0 || len(v.CloudCredentials) > 0 || len(v.Attestations) > 0 || v.IndexTrust != ""
}

// SigstoreMirror is the TUF repository of Sigstore's public instance, whose initial root
// imagegate has built in (sigstore-go's).
const SigstoreMirror = "https://tuf-repo-cdn.sigstore.dev"

// TUFRoot is a TUF repository that publishes a trusted_root.json.
// +kubebuilder:validation:XValidation:rule="has(self.root) || self.mirror == 'https://tuf-repo-cdn.sigstore.dev'",message="root is required: the ConfigMap holding the repository's initial root.json (only Sigstore's public instance, https://tuf-repo-cdn.sigstore.dev, has one built in)"
type TUFRoot struct {
	// mirror is the repository's HTTPS URL, for example https://tuf-repo-cdn.sigstore.dev.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https://[!-~]+$`
	Mirror string `json:"mirror,omitempty"`

	// root names the ConfigMap key, in imagegate's namespace, that holds the repository's
	// initial root.json: the pinned trust anchor from which its later roots are verified.
	// Unset: the one built in, for Sigstore's public instance only.
	// +optional
	Root TUFRootReference `json:"root,omitzero"`
}

// TUFRootReference names the key of a ConfigMap, in imagegate's namespace, holding a TUF
// root.json.
type TUFRootReference struct {
	// name is the ConfigMap's name.
	// +required
	Name ObjectName `json:"name,omitempty"`

	// key is the key that holds root.json. Default: root.json.
	// +optional
	// +kubebuilder:default=root.json
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// Predicate types imagegate reads the findings of.
const (
	// PredicateCosignVuln is cosign's vulnerability scan record (`cosign attest --type vuln`
	// of what `trivy image --format cosign-vuln` writes).
	PredicateCosignVuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
	// PredicateInTotoVulns is in-toto's vulnerabilities predicate, version 0.2.
	PredicateInTotoVulns = "https://in-toto.io/attestation/vulns/v0.2"
)

// AttestationRule is one attestation each covered image must carry.
// +kubebuilder:validation:XValidation:rule="!has(self.vulnerabilities) || self.predicateType in ['https://cosign.sigstore.dev/attestation/vuln/v1', 'https://in-toto.io/attestation/vulns/v0.2']",message="vulnerabilities applies to the vulnerability predicates only: https://cosign.sigstore.dev/attestation/vuln/v1 or https://in-toto.io/attestation/vulns/v0.2"
// +kubebuilder:validation:XValidation:rule="!has(self.provenance) || self.predicateType in ['https://slsa.dev/provenance/v1', 'https://slsa.dev/provenance/v0.2']",message="provenance applies to SLSA provenance only: https://slsa.dev/provenance/v1 or https://slsa.dev/provenance/v0.2"
type AttestationRule struct {
	// name names the rule in messages.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// predicateType is the in-toto predicate type the attestation must have, for example
	// https://cosign.sigstore.dev/attestation/vuln/v1 (cosign's vulnerability scan),
	// https://in-toto.io/attestation/vulns/v0.2, or https://slsa.dev/provenance/v1.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	PredicateType string `json:"predicateType,omitempty"`

	// signers names which of the policy's signers may have signed the attestation (any one
	// suffices). Unset: any of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	Signers []string `json:"signers,omitempty"`

	// vulnerabilities limits what a vulnerability scan may have found, and how old it may be.
	// The newest valid scan decides. Only for the two vulnerability predicate types.
	// +optional
	Vulnerabilities VulnerabilityRules `json:"vulnerabilities,omitzero"`

	// provenance pins what SLSA provenance says about the build: the builder, the source
	// repository and ref, the build type, and whether the workflow took inputs. An
	// attestation counts only when it meets every field set. Only for
	// https://slsa.dev/provenance/v1 and https://slsa.dev/provenance/v0.2.
	// +optional
	Provenance ProvenanceRules `json:"provenance,omitzero"`

	// conditions are CEL expressions over the attestation's in-toto statement
	// (`predicateType`, `subject`, `predicate`), each of which must be true for the
	// attestation to count. They are compiled and cost-checked when the policy is applied,
	// and evaluated with the same cost limits as the kube-apiserver's CEL.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Conditions []AttestationCondition `json:"conditions,omitempty"` //nolint:kubeapilinter // CEL match conditions, as in admission webhooks' matchConditions: not status conditions
}

// Predicate types of SLSA provenance that provenance rules read.
const (
	// PredicateSLSAProvenanceV1 is SLSA provenance v1 (GitHub's attest-build-provenance, the
	// SLSA GitHub generator v2, Tekton Chains).
	PredicateSLSAProvenanceV1 = "https://slsa.dev/provenance/v1"
	// PredicateSLSAProvenanceV02 is SLSA provenance v0.2, which older generators write.
	PredicateSLSAProvenanceV02 = "https://slsa.dev/provenance/v0.2"
)

// WorkflowInputs says whether a build may have taken inputs from whoever started it.
// +kubebuilder:validation:Enum=Allowed;Forbidden
type WorkflowInputs string

// Whether workflow inputs are allowed.
const (
	// WorkflowInputsAllowed accepts any inputs.
	WorkflowInputsAllowed WorkflowInputs = "Allowed"
	// WorkflowInputsForbidden refuses provenance that records inputs set at the build's
	// start (a manual dispatch with parameters).
	WorkflowInputsForbidden WorkflowInputs = "Forbidden"
)

// ProvenanceRules are what SLSA provenance must say.
// +kubebuilder:validation:MinProperties=1
type ProvenanceRules struct {
	// builderID is the builder's ID (runDetails.builder.id; v0.2: builder.id), exact or a
	// glob in which `*` matches any characters but `/`, for example
	// https://github.com/acme/app/.github/workflows/release.yml@refs/tags/*.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BuilderID string `json:"builderID,omitempty"`

	// sourceRepository is the repository the image was built from, as a URI
	// (https://github.com/acme/app): a `git+` prefix, a `.git` suffix and the host's case do
	// not matter.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	SourceRepository string `json:"sourceRepository,omitempty"`

	// sourceRef is the source's ref, exact or a glob in which `*` matches any characters but
	// `/`, for example refs/tags/v* or refs/heads/main.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	SourceRef string `json:"sourceRef,omitempty"`

	// buildType is the provenance's build type, exactly, for example
	// https://actions.github.io/buildtypes/workflow/v1.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BuildType string `json:"buildType,omitempty"`

	// workflowInputs says whether the build may have been started with inputs: Forbidden
	// refuses provenance that records them (a workflow_dispatch with inputs). Default: Allowed.
	// +optional
	WorkflowInputs WorkflowInputs `json:"workflowInputs,omitempty"`
}

// AttestationCondition is one CEL expression an attestation must satisfy.
type AttestationCondition struct {
	// expression is a CEL expression that must evaluate to true, over `predicateType`
	// (string), `subject` (list of {name, digest}) and `predicate` (the predicate, as JSON
	// values), for example `predicate.buildDefinition.externalParameters.workflow.path ==
	// '.github/workflows/release.yml'`. Kubernetes' CEL libraries are available.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Expression string `json:"expression,omitempty"`

	// message is what a refusal says when the expression is false. Default: the expression.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message,omitempty"`
}

// Severity is a vulnerability's severity.
// +kubebuilder:validation:Enum=None;Low;Medium;High;Critical
type Severity string

// Severities, lowest first.
const (
	SeverityNone     Severity = "None"
	SeverityLow      Severity = "Low"
	SeverityMedium   Severity = "Medium"
	SeverityHigh     Severity = "High"
	SeverityCritical Severity = "Critical"
)

// VulnerabilityRules are the limits on a vulnerability scan.
// +kubebuilder:validation:MinProperties=1
type VulnerabilityRules struct {
	// maxSeverity is the highest severity a finding may have: a finding above it refuses
	// the image. A finding without a severity the scanner could give (Trivy's UNKNOWN)
	// counts as Critical. Unset: findings of any severity are allowed.
	// +optional
	MaxSeverity Severity `json:"maxSeverity,omitempty"`

	// maxAgeSeconds is how old the scan may be, in seconds from its scanFinishedOn time, for
	// example 86400 (a day) or 604800 (a week). A scan that old refuses the image, and the
	// audit reports running Pods whose scan has aged past it. Unset: any age.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxAgeSeconds int32 `json:"maxAgeSeconds,omitempty"`

	// ignore lists findings that do not count, each with a reason and an optional expiry.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Ignore []IgnoredVulnerability `json:"ignore,omitempty"`

	// scanners lists the scanners whose results count, by the predicate's scanner URI (a
	// package URL such as pkg:github/aquasecurity/trivy); an entry without a version
	// (`@...`) matches every version. Unset: any scanner whose result imagegate reads.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	Scanners []string `json:"scanners,omitempty"`

	// vex trusts VEX statements attached to the image as in-toto attestations, signed by the
	// signers named here: OpenVEX (predicate type https://openvex.dev/ns, or
	// https://openvex.dev/ns/v0.2.0) and CycloneDX (https://cyclonedx.org/bom or
	// https://cyclonedx.org/vex). A finding whose newest statement for this image says
	// not_affected or fixed does not refuse.
	// +optional
	VEX VEXRules `json:"vex,omitzero"`
}

// VEXRules says whose VEX statements count.
type VEXRules struct {
	// signers names the policy's signers whose VEX statements count (a supplier's key for
	// the supplier's statements, or the policy's own).
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	Signers []string `json:"signers,omitempty"`
}

// IgnoredVulnerability is a finding that does not count, until it expires.
type IgnoredVulnerability struct {
	// id is the vulnerability's ID as the scanner reports it (CVE-2026-1111, GHSA-...).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	ID string `json:"id,omitempty"`

	// reason says why it is ignored.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`

	// expires is when the finding counts again (RFC 3339). Unset: never.
	// +optional
	Expires *metav1.Time `json:"expires,omitempty"`
}

// IsSet reports whether the signer is a key signer.
func (k *KeySigner) IsSet() bool { return k.PublicKey != "" || k.SecretRef.Name != "" || k.KMS != "" }

// IsSet reports whether the signer is a keyless signer.
func (k *KeylessSigner) IsSet() bool { return len(k.Identities) > 0 }

// ObjectName is the name of an object in imagegate's namespace.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
type ObjectName string

// ConfigMapKeyReference names one key of a ConfigMap in imagegate's namespace.
type ConfigMapKeyReference struct {
	// name is the ConfigMap's name.
	// +required
	Name ObjectName `json:"name,omitempty"`

	// key is the key that holds the file. Default: trusted_root.json.
	// +optional
	// +kubebuilder:default=trusted_root.json
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// SecretKeyReference names one key of a Secret in imagegate's namespace.
type SecretKeyReference struct {
	// name is the Secret's name.
	// +required
	Name ObjectName `json:"name,omitempty"`

	// key is the key that holds the PEM public key. Default: cosign.pub.
	// +optional
	// +kubebuilder:default=cosign.pub
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// Signer is one trusted signer: a public key, keyless identities, certificates of a
// private certificate authority, or a Notation trust policy statement.
// +kubebuilder:validation:XValidation:rule="(has(self.key) ? 1 : 0) + (has(self.keyless) ? 1 : 0) + (has(self.certificate) ? 1 : 0) + (has(self.notation) ? 1 : 0) == 1",message="a signer sets exactly one of key, keyless, certificate and notation"
type Signer struct {
	// name names the signer in messages ("tried: key \"release\"").
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// key trusts signatures made with one key pair (`cosign sign --key`).
	// +optional
	Key KeySigner `json:"key,omitzero"`

	// keyless trusts signatures made with short-lived Fulcio certificates
	// (`cosign sign` with an OIDC identity) whose identity matches one of these.
	// +optional
	Keyless KeylessSigner `json:"keyless,omitzero"`

	// certificate trusts signatures made with certificates that a private certificate
	// authority issued (`cosign sign --key ... --certificate ... --certificate-chain ...`),
	// whose subject alternative names match one of its identities.
	// +optional
	Certificate CertificateSigner `json:"certificate,omitzero"`

	// notation trusts Notary Project signatures (`notation sign`; AWS Signer, Azure Key
	// Vault, Azure Trusted Signing), found among the image's OCI referrers, as a Notation
	// trust policy statement with its trust stores would.
	// +optional
	Notation NotationSigner `json:"notation,omitzero"`
}

// NotationSigner is one Notation trust policy statement: the trust stores the signatures'
// certificate chains must lead to, the signing identities trusted, and the verification
// level. No Notation plugin is run: revocation is checked against configured CRLs only.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="(has(self.signatureVerification) && has(self.signatureVerification.level) && self.signatureVerification.level == 'skip') || (has(self.trustStores) && self.trustStores.exists(s, s.type != 'tsa'))",message="a notation signer needs a trust store of type ca or signingAuthority (unless its level is skip)"
// +kubebuilder:validation:XValidation:rule="(has(self.signatureVerification) && has(self.signatureVerification.level) && self.signatureVerification.level == 'skip') || has(self.trustedIdentities)",message="a notation signer needs trustedIdentities (unless its level is skip); \"*\" trusts any certificate the trust stores issued"
// +kubebuilder:validation:XValidation:rule="!(has(self.signatureVerification) && has(self.signatureVerification.level) && self.signatureVerification.level == 'skip') || (!has(self.trustStores) && !has(self.trustedIdentities))",message="a notation signer with level skip verifies nothing, so it takes no trustStores or trustedIdentities (as in Notation)"
type NotationSigner struct {
	// trustStores are the named trust stores the signer trusts, each with its certificates:
	// `ca` roots for signatures made with the notary.x509 scheme (Azure Key Vault, a
	// company CA), `signingAuthority` roots for notary.x509.signingAuthority (AWS Signer),
	// `tsa` roots for RFC 3161 timestamps.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	TrustStores []NotationTrustStore `json:"trustStores,omitempty"`

	// trustedIdentities are the signing certificates trusted, as Notation writes them:
	// "x509.subject: C=US, ST=WA, O=Acme, CN=release" (the full distinguished name, in
	// any order), "*" for any certificate the trust stores issued, or for AWS Signer a
	// signing profile ARN (arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME, optionally
	// with /VERSION).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	TrustedIdentities []string `json:"trustedIdentities,omitempty"`

	// signatureVerification is the verification level, as in a Notation trust policy.
	// +optional
	SignatureVerification NotationSignatureVerification `json:"signatureVerification,omitzero"`

	// crls names the ConfigMap key, in imagegate's namespace, holding the PEM certificate
	// revocation lists of the trust stores' CAs: a certificate listed in its issuer's CRL
	// is revoked. Nothing is fetched from the certificates' CRL or OCSP addresses. Unset:
	// revocation is not checked.
	// +optional
	CRLs NotationCRLReference `json:"crls,omitzero"`
}

// NotationTrustStoreType is a Notation trust store type.
// +kubebuilder:validation:Enum=ca;signingAuthority;tsa
type NotationTrustStoreType string

// Notation trust store types.
const (
	NotationStoreCA               NotationTrustStoreType = "ca"
	NotationStoreSigningAuthority NotationTrustStoreType = "signingAuthority"
	NotationStoreTSA              NotationTrustStoreType = "tsa"
)

// NotationTrustStore is a named trust store and its PEM certificates.
// +kubebuilder:validation:XValidation:rule="has(self.certificates) != has(self.configMapRef)",message="a trust store sets exactly one of certificates and configMapRef"
type NotationTrustStore struct {
	// type is ca, signingAuthority or tsa.
	// +required
	Type NotationTrustStoreType `json:"type,omitempty"`

	// name is the store's name, as the trust policy's "type:name" says it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+$`
	Name string `json:"name,omitempty"`

	// certificates are the PEM CA certificates (roots for tsa).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	Certificates string `json:"certificates,omitempty"`

	// configMapRef names the key of a ConfigMap, in imagegate's namespace, that holds the
	// same PEM certificates.
	// +optional
	ConfigMapRef CertificateConfigMapReference `json:"configMapRef,omitzero"`
}

// NotationLevel is a Notation signature verification level.
// +kubebuilder:validation:Enum=strict;permissive;audit;skip
type NotationLevel string

// Notation verification levels.
const (
	NotationStrict     NotationLevel = "strict"
	NotationPermissive NotationLevel = "permissive"
	NotationAudit      NotationLevel = "audit"
	NotationSkip       NotationLevel = "skip"
)

// NotationAction is what a failed check does: enforce (refuse), log, or skip the check.
// +kubebuilder:validation:Enum=enforce;log;skip
type NotationAction string

// NotationTimestamp says when a timestamp countersignature is verified.
// +kubebuilder:validation:Enum=always;afterCertExpiry
type NotationTimestamp string

// NotationSignatureVerification is a trust policy's signatureVerification.
// +kubebuilder:validation:MinProperties=1
type NotationSignatureVerification struct {
	// level is strict (the default: every check enforced), permissive (authenticity and
	// integrity enforced; expiry, timestamp and revocation failures only logged), audit
	// (only integrity enforced: any intact signature of the digest counts) or skip (no
	// signature is read: the signer counts as satisfied), as Notation defines them.
	// +optional
	// +kubebuilder:default=strict
	Level NotationLevel `json:"level,omitempty"`

	// override changes the action of single checks, as Notation's override does.
	// +optional
	Override NotationOverride `json:"override,omitzero"`

	// verifyTimestamp is always (the default: a timestamp countersignature is verified
	// whenever there is one) or afterCertExpiry (only once the signing certificate has
	// expired).
	// +optional
	//nolint:kubeapilinter // notimestamp: Notation's trust policy names it verifyTimestamp (an RFC 3161 timestamp), and the signer translates that policy one to one.
	VerifyTimestamp NotationTimestamp `json:"verifyTimestamp,omitempty"`
}

// NotationOverride sets the action of single checks (integrity is always enforced).
// +kubebuilder:validation:MinProperties=1
type NotationOverride struct {
	// authenticity is the check that the certificate chain leads to a trust store and the
	// identity is trusted.
	// +optional
	Authenticity NotationAction `json:"authenticity,omitempty"`
	// authenticTimestamp is the check that the certificates were valid when the signature
	// was made (by its timestamp countersignature, or its authentic signing time).
	// +optional
	//nolint:kubeapilinter // notimestamp: Notation's name for the check, which a trust policy's override uses.
	AuthenticTimestamp NotationAction `json:"authenticTimestamp,omitempty"`
	// expiry is the check that the signature's own expiry has not passed.
	// +optional
	Expiry NotationAction `json:"expiry,omitempty"`
	// revocation is the check that no certificate of the chain is listed in the configured
	// CRLs.
	// +optional
	Revocation NotationAction `json:"revocation,omitempty"`
}

// NotationCRLReference names the key of a ConfigMap, in imagegate's namespace, that holds
// PEM certificate revocation lists.
type NotationCRLReference struct {
	// name is the ConfigMap's name.
	// +required
	Name ObjectName `json:"name,omitempty"`

	// key is the key that holds the CRLs. Default: crls.pem.
	// +optional
	// +kubebuilder:default=crls.pem
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// IsSet reports whether the signer is a notation signer.
func (n *NotationSigner) IsSet() bool {
	return len(n.TrustStores) > 0 || len(n.TrustedIdentities) > 0 || n.SignatureVerification.Level != "" || n.CRLs.Name != ""
}

// CertificateSigner is a private certificate authority and the identities of the signing
// certificates it is trusted for. The certificate chain is checked at the time of signing:
// the transparency log's or timestamp authority's time where the signature has one,
// otherwise now; the signing certificate must allow code signing (extended key usage).
// +kubebuilder:validation:XValidation:rule="has(self.certificateChain) != has(self.configMapRef)",message="a certificate signer sets exactly one of certificateChain and configMapRef"
type CertificateSigner struct {
	// certificateChain is the PEM-encoded CA certificates: the roots (self-signed) and any
	// intermediates between them and the signing certificates. Intermediates a signature
	// carries are used too, but only the roots here are trusted.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	CertificateChain string `json:"certificateChain,omitempty"`

	// configMapRef names the key of a ConfigMap, in imagegate's namespace, that holds the
	// same PEM certificates (a trust-manager Bundle, for example).
	// +optional
	ConfigMapRef CertificateConfigMapReference `json:"configMapRef,omitzero"`

	// identities are the trusted signing certificates: one whose subject alternative names
	// (email addresses and URIs, as Sigstore reads them) include a match of any one identity suffices.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	//nolint:kubeapilinter // arrayofstruct: each identity is exact or a regular expression, exactly one (a CEL rule); the same shape as keyless identities.
	Identities []CertificateIdentity `json:"identities,omitempty"`
}

// IsSet reports whether the signer is a certificate signer.
func (c *CertificateSigner) IsSet() bool {
	return c.CertificateChain != "" || c.ConfigMapRef.Name != "" || len(c.Identities) > 0
}

// CertificateConfigMapReference names the key of a ConfigMap, in imagegate's namespace,
// that holds PEM CA certificates.
type CertificateConfigMapReference struct {
	// name is the ConfigMap's name.
	// +required
	Name ObjectName `json:"name,omitempty"`

	// key is the key that holds the certificates. Default: ca.crt.
	// +optional
	// +kubebuilder:default=ca.crt
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// CertificateIdentity is a subject alternative name of a signing certificate, exact or a
// regular expression (RE2, matched in full).
// +kubebuilder:validation:XValidation:rule="has(self.subject) != has(self.subjectRegExp)",message="a certificate identity sets exactly one of subject and subjectRegExp"
type CertificateIdentity struct {
	// subject is the exact subject alternative name, for example release@acme.example or
	// https://ci.acme.example/pipelines/release.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Subject string `json:"subject,omitempty"`

	// subjectRegExp is a regular expression a subject alternative name must match in full.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	SubjectRegExp string `json:"subjectRegExp,omitempty"`
}

// KeySigner is a public key: inline, from a Secret, or in a key management service.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="(has(self.publicKey) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) + (has(self.kms) ? 1 : 0) == 1",message="a key sets exactly one of publicKey, secretRef and kms"
type KeySigner struct {
	// publicKey is the PEM-encoded public key (cosign.pub).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	PublicKey string `json:"publicKey,omitempty"`

	// secretRef names the Secret, in imagegate's namespace, that holds the PEM public key.
	// Only on ClusterImagePolicy.
	// +optional
	SecretRef SecretKeyReference `json:"secretRef,omitzero"`

	// kms names a key in a key management service, as `cosign sign --key` takes it:
	// awskms:///alias/release (AWS KMS: a key ID, alias or ARN; the endpoint is the
	// manager's, never the policy's), gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K
	// (optionally /cryptoKeyVersions/V), azurekms://VAULT.vault.azure.net/KEY (optionally
	// /VERSION), or hashivault://KEY (Vault's transit engine at the manager's VAULT_ADDR).
	// The manager fetches the public key with its own cloud identity, caches it and refreshes
	// it in the background; nothing calls the KMS at admission. Only on ClusterImagePolicy.
	// +optional
	// +kubebuilder:validation:MinLength=10
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^(awskms|gcpkms|azurekms|hashivault)://[!-~]+$')",message="kms must be an awskms://, gcpkms://, azurekms:// or hashivault:// key reference"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('awskms://') || self.startsWith('awskms:///')",message="an awskms reference names the key only (awskms:///alias/release): the KMS endpoint is the manager's (AWS_ENDPOINT_URL_KMS), not a policy's"
	KMS string `json:"kms,omitempty"`
}

// KeylessSigner lists the certificate identities trusted for keyless signatures.
type KeylessSigner struct {
	// identities are the trusted identities: a certificate matching any one suffices.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	//nolint:kubeapilinter // arrayofstruct: each Identity needs an issuer and a subject (or a GitHub workflow), each exact or a regular expression (CEL rules on Identity); the flat shape is cosign's, Kyverno's and policy-controller's, which users copy from.
	Identities []Identity `json:"identities,omitempty"`
}

// Identity is an OIDC issuer and a subject (the certificate's SAN: an email, a URI such as
// a GitHub workflow), each exact or a regular expression (RE2, matched in full), and
// optionally the certificate extensions Fulcio writes from the token's claims.
// +kubebuilder:validation:XValidation:rule="has(self.issuer) != has(self.issuerRegExp)",message="an identity sets exactly one of issuer and issuerRegExp"
// +kubebuilder:validation:XValidation:rule="!(has(self.subject) && has(self.subjectRegExp))",message="an identity sets at most one of subject and subjectRegExp"
// +kubebuilder:validation:XValidation:rule="has(self.subject) || has(self.subjectRegExp) || has(self.githubWorkflow)",message="an identity sets subject or subjectRegExp, or githubWorkflow (whose repository then identifies the signer)"
type Identity struct {
	// issuer is the exact OIDC issuer, for example https://token.actions.githubusercontent.com.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Issuer string `json:"issuer,omitempty"`

	// issuerRegExp is a regular expression the issuer must match in full.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	IssuerRegExp string `json:"issuerRegExp,omitempty"`

	// subject is the exact subject, for example
	// https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Subject string `json:"subject,omitempty"`

	// subjectRegExp is a regular expression the subject must match in full.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	SubjectRegExp string `json:"subjectRegExp,omitempty"`

	// githubWorkflow requires the certificate of a GitHub Actions run to say, in Fulcio's
	// extensions, which repository, workflow, ref, event, commit and runner it ran with.
	// With it the subject may be left out: the repository identifies the signer.
	// +optional
	GitHubWorkflow GitHubWorkflow `json:"githubWorkflow,omitzero"`

	// extensions requires Fulcio's certificate extensions (OIDs 1.3.6.1.4.1.57264.1.9 to .22)
	// to have exactly these values, for any CI system Fulcio issues them for (GitLab,
	// Buildkite, ...).
	// +optional
	Extensions CertificateExtensions `json:"extensions,omitzero"`
}

// GitHubRunnerEnvironment is where a GitHub Actions job ran.
// +kubebuilder:validation:Enum=github-hosted;self-hosted
type GitHubRunnerEnvironment string

// GitHubWorkflow is what a keyless certificate from GitHub Actions must say about the run
// that signed. Each value is read from Fulcio's extensions (the source repository, build
// config, ref, trigger and digest ones; certificates issued before 2023 carry only the older
// GitHub ones, which are read then).
type GitHubWorkflow struct {
	// repository is the repository the workflow ran in, owner/name, exactly:
	// the path of the certificate's source repository URI.
	// +required
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`
	Repository string `json:"repository,omitempty"`

	// workflow is the path of the workflow file in that repository, for example
	// .github/workflows/release.yml, exactly (from the build config URI: the workflow that
	// was triggered, even when a reusable workflow signed).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Workflow string `json:"workflow,omitempty"`

	// ref is the git ref the workflow ran for, a glob as Go's path.Match reads it: `*`
	// matches within one path segment, so refs/tags/v* matches refs/tags/v1.2.0 and not
	// refs/heads/main.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Ref string `json:"ref,omitempty"`

	// trigger is the event that started the run, exactly: push, release, workflow_dispatch...
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z_]+$`
	Trigger string `json:"trigger,omitempty"`

	// sha is the commit the run built, exactly (40 hexadecimal digits).
	// +optional
	// +kubebuilder:validation:MinLength=40
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{40}$`
	SHA string `json:"sha,omitempty"`

	// runnerEnvironment is github-hosted or self-hosted.
	// +optional
	RunnerEnvironment GitHubRunnerEnvironment `json:"runnerEnvironment,omitempty"`
}

// IsSet reports whether the identity requires GitHub workflow extensions.
func (g *GitHubWorkflow) IsSet() bool { return g.Repository != "" }

// CertificateExtensions are Fulcio's certificate extensions, each matched exactly when set.
// +kubebuilder:validation:MinProperties=1
type CertificateExtensions struct {
	// buildSignerURI is the URI of the build instructions that signed (OID .1.9).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BuildSignerURI string `json:"buildSignerURI,omitempty"`
	// buildSignerDigest is the digest of those instructions (OID .1.10).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	BuildSignerDigest string `json:"buildSignerDigest,omitempty"`
	// runnerEnvironment is where the build ran (OID .1.11).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	RunnerEnvironment string `json:"runnerEnvironment,omitempty"`
	// sourceRepositoryURI is the URI of the source repository (OID .1.12).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	SourceRepositoryURI string `json:"sourceRepositoryURI,omitempty"`
	// sourceRepositoryDigest is the commit built (OID .1.13).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	SourceRepositoryDigest string `json:"sourceRepositoryDigest,omitempty"`
	// sourceRepositoryRef is the git ref built (OID .1.14).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	SourceRepositoryRef string `json:"sourceRepositoryRef,omitempty"`
	// sourceRepositoryIdentifier is the repository's immutable ID (OID .1.15): unlike its
	// name, it does not pass to another repository that takes the name after a rename.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	SourceRepositoryIdentifier string `json:"sourceRepositoryIdentifier,omitempty"`
	// sourceRepositoryOwnerURI is the URI of the repository's owner (OID .1.16).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	SourceRepositoryOwnerURI string `json:"sourceRepositoryOwnerURI,omitempty"`
	// sourceRepositoryOwnerIdentifier is the owner's immutable ID (OID .1.17).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	SourceRepositoryOwnerIdentifier string `json:"sourceRepositoryOwnerIdentifier,omitempty"`
	// buildConfigURI is the URI of the top-level build instructions (OID .1.18).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BuildConfigURI string `json:"buildConfigURI,omitempty"`
	// buildConfigDigest is the digest of those instructions (OID .1.19).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	BuildConfigDigest string `json:"buildConfigDigest,omitempty"`
	// buildTrigger is the event that started the build (OID .1.20).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	BuildTrigger string `json:"buildTrigger,omitempty"`
	// runInvocationURI is the URI of the run (OID .1.21).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	RunInvocationURI string `json:"runInvocationURI,omitempty"`
	// sourceRepositoryVisibilityAtSigning is public or private (OID .1.22).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	SourceRepositoryVisibilityAtSigning string `json:"sourceRepositoryVisibilityAtSigning,omitempty"`
}

// Condition types and reasons of a policy's status.
