// Package crd embeds the generated CustomResourceDefinitions (bases/, from `make manifests`),
// so that the offline CLI validates policies with exactly the schema the apiserver enforces.
package crd

import "embed"

// Bases holds bases/*.yaml.
//
//go:embed bases/*.yaml
var Bases embed.FS
