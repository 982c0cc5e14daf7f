// Package tuftest serves a TUF repository (go-tuf's metadata, consistent snapshots) that
// publishes a trusted_root.json, as Sigstore's and GitHub's repositories do: its targets can
// be published again, its root rotated, and the server made to fail.
package tuftest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Repo is a TUF repository over HTTPS.
type Repo struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	failing  bool
	requests int

	keys    map[string]ed25519.PrivateKey // per role
	root    *metadata.Metadata[metadata.RootType]
	version int64 // of targets and snapshot
	// initial is the first root.json: what a client pins.
	initial []byte
}

var roles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// New starts a repository whose trusted_root.json target is trustedRoot.
func New(trustedRoot []byte) (*Repo, error) {
	r := &Repo{files: map[string][]byte{}, keys: map[string]ed25519.PrivateKey{}}
	r.root = metadata.Root(expiry())
	for _, role := range roles {
		if err := r.newKey(role); err != nil {
			return nil, err
		}
	}
	raw, err := r.signRoot(nil)
	if err != nil {
		return nil, err
	}
	r.initial = raw
	if err := r.Publish(trustedRoot); err != nil {
		return nil, err
	}
	r.Server = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	return r, nil
}

func expiry() time.Time { return time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second) }

func (r *Repo) newKey(role string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return err
	}
	if old, ok := r.keys[role]; ok {
		oldKey, err := metadata.KeyFromPublicKey(old.Public())
		if err != nil {
			return err
		}
		id, err := oldKey.ID()
		if err != nil {
			return err
		}
		if err := r.root.Signed.RevokeKey(id, role); err != nil {
			return err
		}
	}
	r.keys[role] = priv
	return r.root.Signed.AddKey(k, role)
}

func signer(k ed25519.PrivateKey) (signature.Signer, error) { return signature.LoadED25519Signer(k) }

// signRoot signs the current root with the root key, and with previous too (a rotation is
// signed by the old root's key and the new one's), and stores it as <version>.root.json.
func (r *Repo) signRoot(previous ed25519.PrivateKey) ([]byte, error) {
	r.root.Signatures = nil
	for _, k := range []ed25519.PrivateKey{r.keys[metadata.ROOT], previous} {
		if k == nil {
			continue
		}
		s, err := signer(k)
		if err != nil {
			return nil, err
		}
		if _, err := r.root.Sign(s); err != nil {
			return nil, err
		}
	}
	raw, err := r.root.ToBytes(false)
	if err != nil {
		return nil, err
	}
	r.files[fmt.Sprintf("%d.root.json", r.root.Signed.Version)] = raw
	return raw, nil
}

// InitialRoot is the repository's first root.json, which a client pins.
func (r *Repo) InitialRoot() []byte { return r.initial }

// Publish makes trustedRoot the trusted_root.json target, in new targets, snapshot and
// timestamp versions.
func (r *Repo) Publish(trustedRoot []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version++
	targets := metadata.Targets(expiry())
	targets.Signed.Version = r.version
	tf, err := metadata.TargetFile().FromBytes("trusted_root.json", trustedRoot, "sha256")
	if err != nil {
		return err
	}
	targets.Signed.Targets["trusted_root.json"] = tf
	snapshot := metadata.Snapshot(expiry())
	snapshot.Signed.Version = r.version
	snapshot.Signed.Meta["targets.json"] = metadata.MetaFile(r.version)
	timestamp := metadata.Timestamp(expiry())
	timestamp.Signed.Version = r.version
	timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.version)
	for name, sign := range map[string]func(signature.Signer) error{
		fmt.Sprintf("%d.targets.json", r.version):  func(s signature.Signer) error { _, err := targets.Sign(s); return err },
		fmt.Sprintf("%d.snapshot.json", r.version): func(s signature.Signer) error { _, err := snapshot.Sign(s); return err },
		"timestamp.json": func(s signature.Signer) error { _, err := timestamp.Sign(s); return err },
	} {
		role := strings.TrimSuffix(name[strings.Index(name, ".")+1:], ".json")
		if name == "timestamp.json" {
			role = metadata.TIMESTAMP
		}
		s, err := signer(r.keys[role])
		if err != nil {
			return err
		}
		if err := sign(s); err != nil {
			return err
		}
	}
	for name, m := range map[string]interface{ ToBytes(bool) ([]byte, error) }{
		fmt.Sprintf("%d.targets.json", r.version): targets, fmt.Sprintf("%d.snapshot.json", r.version): snapshot, "timestamp.json": timestamp,
	} {
		raw, err := m.ToBytes(false)
		if err != nil {
			return err
		}
		r.files[name] = raw
	}
	sum := sha256.Sum256(trustedRoot)
	r.files["targets/"+hex.EncodeToString(sum[:])+".trusted_root.json"] = trustedRoot
	return nil
}

// RotateRoot replaces the root and timestamp keys in a new root version, signed by the old
// root key and the new one, and publishes the targets again under the new keys.
func (r *Repo) RotateRoot(trustedRoot []byte) error {
	r.mu.Lock()
	old := r.keys[metadata.ROOT]
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP} {
		if err := r.newKey(role); err != nil {
			r.mu.Unlock()
			return err
		}
	}
	r.root.Signed.Version++
	r.root.Signed.Expires = expiry()
	_, err := r.signRoot(old)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.Publish(trustedRoot)
}

// Fail makes every request fail with 503 (true) or answer again (false).
func (r *Repo) Fail(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = on
}

// Requests counts the requests served.
func (r *Repo) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func (r *Repo) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests++
	b, ok := r.files[strings.TrimPrefix(req.URL.Path, "/")]
	failing := r.failing
	r.mu.Unlock()
	switch {
	case failing:
		http.Error(w, "the fake repository is failing", http.StatusServiceUnavailable)
	case !ok:
		http.NotFound(w, req)
	default:
		_, _ = w.Write(b)
	}
}
