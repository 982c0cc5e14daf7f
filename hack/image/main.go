// Command image builds the manager's container image without a Docker engine, with
// go-containerregistry: the manager compiled statically for each platform, alone in one layer,
// run as a non-root user, with the OCI labels, written as an OCI image layout (an index with
// one image per platform) and, with --push, pushed to a registry.
//
//	go run ./hack/image --version v0.2.0 --out dist/image
//	go run ./hack/image --version v0.2.0 --push registry.example.com/imagegate:v0.2.0
//
// `make image` and `make image-push` run it.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What every image of the manager is.
const (
	// User is distroless's nonroot user: the image holds no shell and no /etc/passwd, so the
	// user is numeric.
	User       = "65532:65532"
	Entrypoint = "/manager"
	Source     = "https://github.com/imagegate/imagegate"
	Licenses   = "Apache-2.0"
)

func main() {
	out := flag.String("out", "dist/image", "OCI image layout to write (replaced)")
	push := flag.String("push", "", "also push the index to this reference (registry/repository:tag), with the credentials docker login wrote")
	version := flag.String("version", "dev", "the version stamped into the binary and the labels")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	flag.Parse()
	if err := run(*out, *push, *version, strings.Split(*platforms, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(out, push, version string, platforms []string) error {
	work, err := os.MkdirTemp("", "imagegate-image-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()
	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		osName, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			return fmt.Errorf("platform %q is not os/arch", p)
		}
		bin := filepath.Join(work, "manager-"+osName+"-"+arch)
		fmt.Printf("building the manager for %s/%s\n", osName, arch)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin, "./cmd/manager")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+osName, "GOARCH="+arch)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building for %s/%s: %w", osName, arch, err)
		}
		img, err := image(bin, osName, arch, version)
		if err != nil {
			return err
		}
		index = mutate.AppendManifests(index, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}},
		})
	}
	index = mutate.Annotations(index, labels(version)).(v1.ImageIndex)
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	lp, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendIndex(index, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": version})); err != nil {
		return err
	}
	d, err := index.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (index %s, %s)\n", out, d, strings.Join(platforms, ", "))
	if push != "" {
		ref, err := name.ParseReference(push)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, index, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing to %s: %w", ref, err)
		}
		fmt.Printf("pushed %s@%s\n", ref, d)
	}
	return nil
}

func labels(version string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   Source,
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.licenses": Licenses,
		"org.opencontainers.image.title":    "imagegate manager",
	}
}

// image is one platform's image: the binary at /manager, nothing else.
func image(bin, osName, arch, version string) (v1.Image, error) {
	data, err := os.ReadFile(bin) //nolint:gosec // built just above
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Name: strings.TrimPrefix(Entrypoint, "/"), Mode: 0o555, Size: int64(len(data)),
		Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	tarBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = osName, arch
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()} // reproducible: the same sources, the same digest
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{Entrypoint}
	cfg.Config.Labels = labels(version)
	return mutate.ConfigFile(img, cfg)
}
