package vap

import (
	"strings"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// WebhookCondition is the match condition that the validating Pod webhook gets while the
// name rules are in ValidatingAdmissionPolicies: the webhook is called only for a Pod that
//   - has an image a verify rule may cover (podspec.VerifyCondition, a superset);
//   - has an image the generated policies leave to it (not plain, see kindOf): the webhook
//     decides every rule for such a Pod, so nothing is decided by a weaker rule;
//   - is in a namespace a policy kept in the webhook may cover (any, for a
//     ClusterImagePolicy).
//
// With nothing of the kind it is "false": no Pod is sent.
func WebhookCondition(plan *Plan, verify []policy.PinEntry) string {
	if plan.KeptClusterWide {
		return "true"
	}
	var parts []string
	if v := podspec.VerifyCondition(verify); v != "false" {
		if v == "true" {
			return "true"
		}
		parts = append(parts, v)
	}
	parts = append(parts, podspec.ImagesCEL+".exists(i, "+kindOf("i")+" == 'x')")
	if len(plan.KeptNamespaces) > 0 {
		parts = append(parts, "request.namespace in "+quoteList(plan.KeptNamespaces))
	}
	return strings.Join(parts, " || ")
}
