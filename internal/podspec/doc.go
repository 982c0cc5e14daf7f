// Package podspec is the one place that knows where images live in Kubernetes objects: the
// image fields of a pod spec (PodImages), the workload kinds that carry a pod template and
// where (Workloads, TemplateOf), the slim decoding of a Pod from an AdmissionReview
// (DecodePod), the purpose-built record of a Pod in the cluster that the audit and the preflight read
// (Running, and Slim, the cache transform that makes it), and the
// namespaces the shipped webhook configuration leaves out (DefaultExcludedNamespaces).
//
// Copies of this knowledge that cannot be Go (the webhook configuration's matchConditions and
// rules under config/webhook) are tied to it by this package's tests. Adding an image field
// or a workload kind is a change here, and the tests name every other place that must follow.
package podspec
