// Package config tests the installation as kustomize renders it from config/: complete,
// hardened, with the RBAC of its golden file, and the overlays adding only what they say.
package config

import (
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// root is the repository's root.
var root = filepath.Join("..", "..", "..")

func TestConfig(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "config/ suite")
}
