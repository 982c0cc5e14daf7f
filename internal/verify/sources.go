package verify

import (
	"context"
	"crypto"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NamespaceSources reads Secrets and ConfigMaps of one namespace (imagegate's own) through a
// client.Reader, the manager's cache of that namespace.
type NamespaceSources struct {
	Reader    client.Reader
	Namespace string
	// Remote holds the public keys of kms key signers and the trusted roots of TUF
	// repositories; nil: none are read.
	Remote *Remote
}

// TUFRoot implements TUFSource.
func (s NamespaceSources) TUFRoot(mirror string, initialRoot []byte) ([]byte, error) {
	if s.Remote == nil {
		return nil, fmt.Errorf("the trusted root of %s: this manager reads no TUF repositories", mirror)
	}
	return s.Remote.TUFRoot(mirror, initialRoot)
}

// KMSKey implements KMSSource.
func (s NamespaceSources) KMSKey(ref string) (crypto.PublicKey, error) {
	if s.Remote == nil {
		return nil, fmt.Errorf("kms %q: this manager reads no KMS keys", ref)
	}
	return s.Remote.KMSKey(ref)
}

const sourceTimeout = 5 * time.Second

// Secret implements Sources.
func (s NamespaceSources) Secret(name string) (*corev1.Secret, error) {
	obj := &corev1.Secret{}
	return obj, s.get(name, obj)
}

// ConfigMap implements Sources.
func (s NamespaceSources) ConfigMap(name string) (*corev1.ConfigMap, error) {
	obj := &corev1.ConfigMap{}
	return obj, s.get(name, obj)
}

func (s NamespaceSources) get(name string, obj client.Object) error {
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, obj)
	if apierrors.IsNotFound(err) {
		return ErrNotFound
	}
	return err
}
