//go:build unix && !linux

package eastwest

import "syscall"

func sysRead(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }
