package webhook

import (
	"context"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
)

// ExceptionWebhookPath is where ImagePolicyExceptions are validated (config/webhook/
// exception_webhook.yaml registers it; no +kubebuilder:webhook marker, see there).
const ExceptionWebhookPath = "/validate-imagepolicyexception"

// ExceptionValidator refuses the ImagePolicyExceptions that the schema cannot: an expiresAt
// already past when the exception is created, patterns the engine cannot parse. Every
// problem is named with its field.
type ExceptionValidator struct {
	decoder admission.Decoder
	now     func() time.Time
}

// NewExceptionValidator returns the validator; now nil: time.Now.
func NewExceptionValidator(decoder admission.Decoder, now func() time.Time) *ExceptionValidator {
	if now == nil {
		now = time.Now
	}
	return &ExceptionValidator{decoder: decoder, now: now}
}

// SetupExceptionWebhookWithManager registers the exception webhook on the manager's server.
func SetupExceptionWebhookWithManager(mgr ctrl.Manager) {
	register(mgr.GetWebhookServer(), ExceptionWebhookPath, &ctrlwebhook.Admission{
		LogConstructor: requestLogger,
		Handler:        NewExceptionValidator(admission.NewDecoder(mgr.GetScheme()), nil),
	})
}

// Handle validates one CREATE or UPDATE of an ImagePolicyException.
func (v *ExceptionValidator) Handle(_ context.Context, req admission.Request) admission.Response {
	var ex v1alpha1.ImagePolicyException
	if err := v.decoder.Decode(req, &ex); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	creating := req.Operation == admissionv1.Create
	if !creating {
		// An UPDATE may keep the expiry it had (status writes, label edits once expired), but
		// not move it into the past, which would be a creation in disguise.
		var old v1alpha1.ImagePolicyException
		if err := v.decoder.DecodeRaw(req.OldObject, &old); err == nil && !sameTime(old.Spec.ExpiresAt, ex.Spec.ExpiresAt) {
			creating = true
		}
	}
	if problems := policy.ValidateException(&ex, creating, v.now()); len(problems) > 0 {
		return admission.Denied(`ImagePolicyException "` + ex.Name + `" is invalid: ` + strings.Join(problems, "; "))
	}
	return admission.Allowed("")
}

func sameTime(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}
