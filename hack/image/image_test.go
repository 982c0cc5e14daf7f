//go:build image

package main

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The image `make image` builds, read back from its OCI layout as a runtime would: an index
// of linux/amd64 and linux/arm64, each image non-root with the manager as entrypoint, the
// labels, one layer holding only the manager (no shell), and a binary that is the manager.
func TestImage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "image")
	if err := os.Chdir("../.."); err != nil {
		t.Fatal(err)
	}
	if err := run(out, "", "v0.0.0-test", []string{"linux/amd64", "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v0.0.0-test" {
		t.Fatalf("the layout should hold one index named by the version: %+v", tm.Manifests)
	}
	index, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, desc := range im.Manifests {
		platforms = append(platforms, desc.Platform.OS+"/"+desc.Platform.Architecture)
		img, err := index.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != desc.Platform.OS || cfg.Architecture != desc.Platform.Architecture {
			t.Errorf("%s: config says %s/%s", platforms[len(platforms)-1], cfg.OS, cfg.Architecture)
		}
		if cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/manager"}) {
			t.Errorf("%s: user %q entrypoint %v", desc.Platform.Architecture, cfg.Config.User, cfg.Config.Entrypoint)
		}
		for k, want := range map[string]string{"org.opencontainers.image.source": Source, "org.opencontainers.image.version": "v0.0.0-test", "org.opencontainers.image.licenses": Licenses} {
			if cfg.Config.Labels[k] != want {
				t.Errorf("%s: label %s = %q, want %q", desc.Platform.Architecture, k, cfg.Config.Labels[k], want)
			}
		}
		bin := onlyFile(t, img, "manager")
		if desc.Platform.Architecture == runtime.GOARCH {
			path := filepath.Join(t.TempDir(), "manager")
			if err := os.WriteFile(path, bin, 0o700); err != nil {
				t.Fatal(err)
			}
			info, err := exec.Command("go", "version", "-m", path).Output()
			if err != nil || !strings.Contains(string(info), "\tpath\tgithub.com/imagegate/imagegate/cmd\n") {
				t.Errorf("the binary is not the manager: %v\n%s", err, info)
			}
			v, err := exec.Command(path, "--version").Output()
			if err != nil || !strings.Contains(string(v), "v0.0.0-test") {
				t.Errorf("manager --version: %v %q", err, v)
			}
		}
	}
	slices.Sort(platforms)
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %v", platforms)
	}
}

// onlyFile returns the content of the image's one file, failing if the image holds anything
// else (a shell, a package manager, a second file).
func onlyFile(t *testing.T, img v1.Image, want string) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	var content []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != want {
			t.Errorf("the image holds %q besides %s", h.Name, want)
			continue
		}
		if h.Mode != 0o555 || h.Uid != 0 {
			t.Errorf("%s: mode %o uid %d", want, h.Mode, h.Uid)
		}
		if content, err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
	if content == nil {
		t.Fatalf("the image has no %s", want)
	}
	return content
}
