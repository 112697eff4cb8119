//go:build unix && !linux

// Package childproc starts the processes that tests run beside them (etcd,
// kube-apiserver, spire-server, a hub) so that none outlives its test.
package childproc

import "syscall"

// Attr puts a child in its own process group. Outside Linux no signal
// follows the test's death: its cleanup stops the child.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
