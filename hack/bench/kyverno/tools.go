//go:build tools

// Package tools pins the Kyverno command this module builds.
package tools

import _ "github.com/kyverno/kyverno/cmd/kyverno"
