package localcluster

import "syscall"

// childAttributes puts a child in its own process group, so that a Ctrl-C in the terminal
// reaches only this program, which then stops the children in order; and has the kernel kill
// it if this program dies without cleaning up.
func childAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
