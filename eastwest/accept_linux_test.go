package eastwest

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// The gateway accepts with accept4 and sets TCP_NODELAY once, on the
// listener: the accepted sockets must have it (inherited), or relayed
// pieces would wait for ACKs (Nagle); TCP_INQ, or reads would not say what
// they left; and be non-blocking, on Go's poller.
func TestAcceptorSocketsHaveNoDelay(t *testing.T) {
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	next, stop, err := acceptor(lis)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for range 3 {
		c := dialTCP(t, lis.Addr().String())
		s, err := next()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := s.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var nodelay, inq, flags int
		var nerr, ierr, ferr error
		if err := raw.Control(func(fd uintptr) {
			nodelay, nerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
			inq, ierr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpInq)
			flags, ferr = fcntlFlags(int(fd))
		}); err != nil || nerr != nil || ierr != nil || ferr != nil {
			t.Fatal(err, nerr, ierr, ferr)
		}
		if nodelay == 0 {
			t.Error("an accepted socket without TCP_NODELAY")
		}
		if inq == 0 {
			t.Error("an accepted socket without TCP_INQ")
		}
		if flags&syscall.O_NONBLOCK == 0 {
			t.Error("an accepted socket in blocking mode")
		}
		if got, want := peerAddr(s), c.LocalAddr().String(); got != want {
			t.Errorf("peer address %q, want %q", got, want)
		}
		s.Close()
		c.Close()
	}
}

func fcntlFlags(fd int) (int, error) {
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if errno != 0 {
		return 0, os.NewSyscallError("fcntl", errno)
	}
	return int(flags), nil
}
