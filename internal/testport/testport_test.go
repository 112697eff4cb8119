package testport

import (
	"net"
	"os/exec"
	"testing"
)

// A reserved port is refused to every other caller while the test runs,
// even with no listener on it.
func TestAddrReservesUntilTestEnds(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		addr := Addr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("reserved address is not free: %v", err)
		}
		l.Close()
	}
}

// Another process cannot take a port this one reserved.
func TestAddrReservationHoldsAcrossProcesses(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Fatal("flock(1) from util-linux is needed")
	}
	_, port, _ := net.SplitHostPort(Addr(t))
	lockFile := lockPath(port)
	if err := exec.Command("flock", "--nonblock", lockFile, "true").Run(); err == nil {
		t.Fatalf("another process locked %s while it was reserved", lockFile)
	}
}
