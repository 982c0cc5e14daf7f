package podspec

import "strings"

// DefaultExcludedNamespaces are the namespaces the shipped webhook configuration does not
// cover (config/webhook/scope_patch.yaml, on kubernetes.io/metadata.name): imagegate's own,
// and those a cluster needs to come back up. The manager's and the CLI's
// --excluded-namespaces default to them; a test ties every copy.
var DefaultExcludedNamespaces = []string{"imagegate-system", "kube-system", "kube-node-lease"}

// ExcludedNamespacesFlag is the one name of the flag, in the manager and in the CLI.
const ExcludedNamespacesFlag = "excluded-namespaces"

// DefaultExcludedNamespacesValue is DefaultExcludedNamespaces as a flag value.
func DefaultExcludedNamespacesValue() string { return strings.Join(DefaultExcludedNamespaces, ",") }
