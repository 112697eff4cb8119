// Package childproc starts the processes that tests run beside them (etcd,
// kube-apiserver, spire-server, a hub) so that none outlives its test.
package childproc

import "syscall"

// Attr puts a child in its own process group, so that a test killed by a
// signal does not take the terminal's group with it and its children can
// be stopped together, and has the kernel kill it if the test dies.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
