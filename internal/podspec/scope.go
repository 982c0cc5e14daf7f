package podspec

import "strings"

// DefaultExcludedNamespaces are the namespaces the shipped webhook configuration does not
// cover (config/webhook/scope_patch.yaml, on kubernetes.io/metadata.name): imagegate's own,
// those a cluster needs to come back up, and cert-manager's, which issues imagegate's serving
// certificate (were its Pods refused after a restart, the certificate could not be renewed and
// imagegate could not come back). The manager's and the CLI's --excluded-namespaces default to
// them; a test ties every copy.
var DefaultExcludedNamespaces = []string{"imagegate-system", "kube-system", "kube-node-lease", "cert-manager"}

// ExcludedNamespacesFlag is the one name of the flag, in the manager and in the CLI.
const ExcludedNamespacesFlag = "excluded-namespaces"

// DefaultExcludedNamespacesValue is DefaultExcludedNamespaces as a flag value.
func DefaultExcludedNamespacesValue() string { return strings.Join(DefaultExcludedNamespaces, ",") }
