package localcluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// ClientAuth is what makes the apiserver authenticate itself to imagegate's webhooks with a
// client certificate, as docs/install.md ("Authenticating the apiserver") sets it up on a real
// control plane: APIServerArg goes into Options.ExtraAPIServerArgs, ManagerArg into the
// manager's flags.
type ClientAuth struct {
	APIServerArg, ManagerArg string
}

// WebhookClientAuth writes into dir a client CA, the apiserver's client certificate from it,
// a kubeconfig that gives that certificate to the webhooks at 127.0.0.1:port (the apiserver
// picks the user by the webhook's host and port), and the AdmissionConfiguration that points
// both webhook plugins at it.
func WebhookClientAuth(dir string, port int) (*ClientAuth, error) {
	ca, err := NewCA("apiserver-webhook-client-ca")
	if err != nil {
		return nil, err
	}
	client, err := ca.Client("kube-apiserver")
	if err != nil {
		return nil, err
	}
	certFile, keyFile, err := client.Write(dir, "apiserver-webhook-client")
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "webhook-client-ca.crt")
	kubeconfig := filepath.Join(dir, "webhook-client.kubeconfig")
	admission := filepath.Join(dir, "admission.yaml")
	files := map[string]string{
		caFile: string(ca.CertPEM),
		kubeconfig: fmt.Sprintf(`apiVersion: v1
kind: Config
users:
- name: "127.0.0.1:%d"
  user:
    client-certificate: %s
    client-key: %s
`, port, certFile, keyFile),
		admission: fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %[1]s
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %[1]s
`, kubeconfig),
	}
	for name, content := range files {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	return &ClientAuth{
		APIServerArg: "--admission-control-config-file=" + admission,
		ManagerArg:   "--webhook-client-ca=" + caFile,
	}, nil
}
