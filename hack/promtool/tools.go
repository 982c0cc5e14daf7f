//go:build tools

// Package tools pins promtool, which `make test` builds from the Go module proxy to check
// config/prometheus's alerting rules and run their unit tests.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
