package vap

import (
	"strings"

	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// WebhookCondition is the match condition that the validating Pod webhook gets while the
// name rules are in ValidatingAdmissionPolicies: the webhook is called only for a Pod that
//   - has an image a verify rule may cover (podspec.VerifyHint, a superset: every plain
//     image a verify rule covers names the rule's host and path prefix as written);
//   - has an image the generated policies leave to it (not plain, see kindOf), or an image
//     ID (every covering policy refuses it, those without a generated object included): the
//     webhook decides every rule for such a Pod, so nothing is decided by a weaker rule;
//   - is in a namespace a policy kept in the webhook may cover (any, for a
//     ClusterImagePolicy).
//
// With nothing of the kind it is "false": no Pod is sent.
func WebhookCondition(plan *Plan, verify []policy.PinEntry) string {
	if plan.KeptClusterWide {
		return "true"
	}
	var parts []string
	// One pass over the images: not plain, an image ID, or maybe covered by a verify rule.
	// Image IDs go to the webhook too: every policy that covers a Pod refuses them, those
	// with no name rule (verify rules only) included, which have no generated object.
	hint := podspec.VerifyHint(verify, "i")
	if hint == "true" {
		return "true"
	}
	image := func(i string) string {
		c := notPlain(i)
		if hint != "false" {
			c = podspec.VerifyHint(verify, i) + " || " + c
		}
		return c
	}
	if len(hint) <= podspec.MaxDirect {
		parts = append(parts, podspec.AnyImageCEL(image))
	} else {
		parts = append(parts, podspec.ImagesCEL+".exists(i, "+image("i")+")")
	}
	if len(plan.KeptNamespaces) > 0 {
		parts = append(parts, "request.namespace in "+quoteList(plan.KeptNamespaces))
	}
	return strings.Join(parts, " || ")
}

// notPlain is kindOf(i) != 'p' in fewer steps (no quotable test): an image ID or not plain.
func notPlain(i string) string {
	return "(" + i + ".matches('" + celRegex(imageIDRE) + "') || !" + plain(i) + ")"
}
