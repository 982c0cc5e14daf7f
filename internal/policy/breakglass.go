package policy

import (
	"strings"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// BreakGlassRequested reports whether annotations ask for break-glass, as the
// ImagePolicyWebhook convention spells it: a key ending in `.image-policy.k8s.io/break-glass`
// (for example alpha.image-policy.k8s.io/break-glass) with the value "true".
func BreakGlassRequested(annotations map[string]string) bool {
	for k, v := range annotations {
		if v == "true" && strings.HasSuffix(k, BreakGlassKeySuffix) && len(k) > len(BreakGlassKeySuffix) {
			return true
		}
	}
	return false
}

// BreakGlassKeySuffix ends the annotation key that asks for break-glass.
const BreakGlassKeySuffix = ".image-policy.k8s.io/break-glass"

// applyBreakGlass turns the denials of policies that allow break-glass into warnings; for a
// policy with breakGlassRequiresException, only where an active break-glass exception grants
// it for the Pod, the rule and the image.
func (s *Snapshot) applyBreakGlass(d *Decision, active []*compiledException) {
	for i := range d.Violations {
		v := &d.Violations[i]
		if v.Mode == v1alpha1.ModeEnforce && s.breakGlass[v.Policy] &&
			(!s.glassNeedsException[v.Policy] || s.breakGlassAllowedBy(active, v)) {
			v.Mode, v.BreakGlass = v1alpha1.ModeWarn, true
		}
	}
}
