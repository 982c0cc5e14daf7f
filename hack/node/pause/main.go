// Command pause does nothing until it is told to stop: the one program of the images that the
// e2e suite's node runs (its Pods' sandbox and its containers), built static so that an image
// of one file runs it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fmt.Println("pause: running as", os.Args)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
