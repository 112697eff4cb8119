// Package testport hands tests loopback addresses that no other test on
// the machine is given while the test runs, even while the server using
// one is stopped: a test that restarts a hub on its old address must not
// find another test's listener there.
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Ports come from below the kernel's ephemeral range, so that no outgoing
// connection takes one while its server is away.
const (
	lowest = 20000
	count  = 12000
)

// Addr returns a free loopback TCP address, reserved until the test ends
// by a lock on a file that every test process on the machine checks.
func Addr(tb testing.TB) string {
	tb.Helper()
	if err := os.MkdirAll(lockPath(""), 0o777); err != nil {
		tb.Fatalf("testport: %v", err)
	}
	for range 1000 {
		port := strconv.Itoa(lowest + rand.IntN(count))
		lock, err := os.OpenFile(lockPath(port), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			tb.Fatalf("testport: %v", err)
		}
		// flock locks belong to the open file, so a second reservation in
		// this process is refused as one in another process is.
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			lock.Close()
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lock.Close()
			continue
		}
		l.Close()
		tb.Cleanup(func() { lock.Close() })
		return addr
	}
	tb.Fatalf("testport: no free port between %d and %d", lowest, lowest+count)
	return ""
}

// lockPath is the lock file of a port, or their directory.
func lockPath(port string) string {
	return filepath.Join(os.TempDir(), "federate-test-ports", port)
}
