//go:build tools

// Package tools pins the CNI plugins this module builds for the e2e suite's and the demo's
// node: tap (an eth0 inside the Pod's network namespace, nothing on the host), host-local
// (its addresses, with its state in the node's folder) and loopback.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/main/tap"
)
