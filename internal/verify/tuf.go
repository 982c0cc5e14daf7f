package verify

// Trusted roots from TUF repositories: sigstore-go's TUF client, from a pinned initial
// root.json, fetching trusted_root.json in the background (see Remote).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tuf"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// TUFOptions configure the TUF clients of a Remote.
type TUFOptions struct {
	// CacheDir holds each repository's metadata between fetches (and restarts, where it is a
	// volume); empty: kept in memory only.
	CacheDir string
	// HTTPClient fetches the metadata; nil: one with a 30 second timeout.
	HTTPClient *http.Client
}

// TUFSource gives the trusted_root.json that a TUF repository publishes: the manager's
// Remote (cached). A Sources that is not one compiles no tufRoots.
type TUFSource interface {
	TUFRoot(mirror string, initialRoot []byte) ([]byte, error)
}

// tufID names a repository as pinned by its initial root: its cache key and directory.
func tufID(mirror string, initialRoot []byte) string {
	sum := sha256.Sum256(append([]byte(mirror+"\x00"), initialRoot...))
	return hex.EncodeToString(sum[:8])
}

// TUFRoot implements TUFSource from the cache.
func (r *Remote) TUFRoot(mirror string, initialRoot []byte) ([]byte, error) {
	return r.get("tuf\x00"+tufID(mirror, initialRoot), "the trusted root of "+mirror, "from its TUF repository", func(ctx context.Context) ([]byte, error) {
		return FetchTUFRoot(ctx, mirror, initialRoot, r.TUF)
	})
}

// FetchTUFRoot updates the repository's metadata from initialRoot (following its signed root
// rotations, refusing expired or rolled-back metadata, as TUF specifies) and returns its
// trusted_root.json target, checked to parse. It returns when ctx ends.
func FetchTUFRoot(ctx context.Context, mirror string, initialRoot []byte, o TUFOptions) ([]byte, error) {
	return withinContext(ctx, func() ([]byte, error) { return fetchTUFRoot(mirror, initialRoot, o) })
}

func fetchTUFRoot(mirror string, initialRoot []byte, o TUFOptions) ([]byte, error) {
	opts := &tuf.Options{Root: initialRoot, RepositoryBaseURL: mirror, DisableLocalCache: true}
	if o.CacheDir != "" {
		opts.DisableLocalCache, opts.CachePath = false, filepath.Join(o.CacheDir, tufID(mirror, initialRoot))
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	f := fetcher.NewDefaultFetcher()
	f.SetHTTPClient(hc)
	f.SetRetry(time.Second, 1)
	opts.Fetcher = f
	c, err := tuf.New(opts)
	if err != nil {
		return nil, fmt.Errorf("updating the TUF metadata: %w", err)
	}
	b, err := c.GetTarget("trusted_root.json")
	if err != nil {
		return nil, fmt.Errorf("reading its trusted_root.json target: %w", err)
	}
	if _, err := root.NewTrustedRootFromJSON(b); err != nil {
		return nil, fmt.Errorf("its trusted_root.json is not valid: %w", err)
	}
	return b, nil
}

// loadTUFRoots reads each TUF root's initial root (a ConfigMap, or the one built in for
// Sigstore's public instance) and its current trusted_root.json from src.
func loadTUFRoots(src Sources, roots []v1alpha1.TUFRoot) ([]root.TrustedMaterial, [][]byte, error) {
	if len(roots) == 0 {
		return nil, nil, nil
	}
	ts, ok := src.(TUFSource)
	if !ok {
		return nil, nil, errors.New("tufRoots: TUF repositories are not read here: use trustedRoot")
	}
	var out []root.TrustedMaterial
	var raw [][]byte
	for i, tr := range roots {
		initial := tuf.DefaultRoot()
		if ref := tr.Root; ref.Name != "" {
			s, err := configMapKey(src, fmt.Sprintf("tufRoots[%d]: root", i), ref.Name, or(ref.Key, "root.json"))
			if err != nil {
				return nil, nil, err
			}
			initial = []byte(s)
		} else if tr.Mirror != v1alpha1.SigstoreMirror {
			return nil, nil, fmt.Errorf("tufRoots[%d]: root is required for %s (only %s has one built in)", i, tr.Mirror, v1alpha1.SigstoreMirror)
		}
		b, err := ts.TUFRoot(tr.Mirror, initial)
		if err != nil {
			return nil, nil, fmt.Errorf("tufRoots[%d]: %w", i, err)
		}
		t, err := root.NewTrustedRootFromJSON(b)
		if err != nil {
			return nil, nil, fmt.Errorf("tufRoots[%d]: the trusted_root.json of %s is not valid: %w", i, tr.Mirror, err)
		}
		out, raw = append(out, t), append(raw, b)
	}
	return out, raw, nil
}
