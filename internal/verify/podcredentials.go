package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PodCredentials reads the registry credentials a Pod itself may use: the Secrets its
// imagePullSecrets name and those of its ServiceAccount, as the kubelet does. It is an opt-in
// (the manager's --pull-secrets-from-pods): it needs read access to Secrets and
// ServiceAccounts in every namespace, which the default installation does not grant.
type PodCredentials struct {
	// Reader reads from the apiserver directly (the manager's API reader): no cluster-wide
	// cache of Secrets.
	Reader client.Reader
}

// podKeychain is a context value: the credentials of the Pod being admitted.
type podKeychain struct {
	keychain authn.Keychain
	id       string
}

type podKeychainKey struct{}

// WithPod returns ctx carrying the credentials of a Pod in namespace, with its
// ServiceAccount and its imagePullSecrets. Secrets that do not exist are skipped, as the
// kubelet skips them; one that cannot be read is an error.
func (p *PodCredentials) WithPod(ctx context.Context, namespace, serviceAccount string, pullSecrets []corev1.LocalObjectReference) (context.Context, error) {
	if p == nil || p.Reader == nil {
		return ctx, nil
	}
	names := make([]string, 0, len(pullSecrets))
	for _, s := range pullSecrets {
		names = append(names, s.Name)
	}
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	sa := &corev1.ServiceAccount{}
	if err := p.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: serviceAccount}, sa); err != nil && !apierrors.IsNotFound(err) {
		return ctx, fmt.Errorf("reading ServiceAccount %s/%s for its imagePullSecrets: %w", namespace, serviceAccount, err)
	}
	for _, s := range sa.ImagePullSecrets {
		names = append(names, s.Name)
	}
	var secrets []*corev1.Secret
	h := sha256.New()
	for _, name := range names {
		sec := &corev1.Secret{}
		if err := p.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, sec); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return ctx, fmt.Errorf("reading the pull secret %s/%s: %w", namespace, name, err)
		}
		if sec.Type != corev1.SecretTypeDockerConfigJson {
			continue
		}
		h.Write([]byte(sec.Namespace + "/" + sec.Name + "/" + sec.ResourceVersion + "\x00"))
		secrets = append(secrets, sec)
	}
	if len(secrets) == 0 {
		return ctx, nil
	}
	kc, err := keychainFrom(secrets)
	if err != nil {
		return ctx, fmt.Errorf("the Pod's pull secrets: %w", err)
	}
	return context.WithValue(ctx, podKeychainKey{}, &podKeychain{keychain: kc, id: hex.EncodeToString(h.Sum(nil))[:16]}), nil
}

func podKeychainOf(ctx context.Context) *podKeychain {
	pk, _ := ctx.Value(podKeychainKey{}).(*podKeychain)
	return pk
}
