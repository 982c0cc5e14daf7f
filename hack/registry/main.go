// Command registry serves a real OCI registry (go-containerregistry's pkg/registry, with the
// OCI 1.1 Referrers API) as a process of its own, optionally behind Basic authentication:
// for the e2e suite, whose manager must reach a registry that is not part of the test
// process, and for trying imagegate by hand.
//
//	go run ./hack/registry --addr 127.0.0.1:5000 --user ci --password secret
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imagegate/imagegate/test/utils/registrytest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "address to listen on")
	user := flag.String("user", "", "require Basic authentication with this user (and --password)")
	password := flag.String("password", "", "the password of --user")
	referrers := flag.Bool("referrers", true, "serve the OCI 1.1 Referrers API (off: clients fall back to the sha256-<hex> tag)")
	flag.Parse()
	reg, err := registrytest.Listen(*addr, *referrers)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *user != "" {
		reg.RequireBasicAuth(*user, *password)
	}
	fmt.Printf("serving an OCI registry at %s\n", reg.Host)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	reg.Close()
}
