//go:build !linux

package localcluster

import "syscall"

// childAttributes puts a child in its own process group, so that a Ctrl-C in the terminal
// reaches only this program, which then stops the children in order. Only Linux can have the
// kernel kill the children if this program dies without cleaning up: elsewhere a crash of the
// demo or a test can leave them running.
func childAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
