package eastwest

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// acceptor returns a function that accepts lis's next connection, and
// one that ends it (closing lis does not). Go's TCPListener.Accept asks
// the kernel for the new socket's local address (getsockname) and sets
// TCP_NODELAY on it, two system calls, and allocates a netFD and two
// addresses per connection. Here accept4 takes no address; TCP_NODELAY
// is set once on the listener, which every accepted socket inherits
// (TCP_INQ is not inherited: it is set on each); and the socket goes on
// Go's poller as an *os.File (one fcntl). A listener's RawConn cannot
// wait, so the acceptor waits on a duplicate of lis's descriptor.
func acceptor(lis *net.TCPListener) (next func() (socket, error), stop func(), err error) {
	f, err := lis.File()
	if err != nil {
		return nil, nil, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}); err != nil || serr != nil {
		f.Close()
		return nil, nil, errors.Join(err, os.NewSyscallError("setsockopt", serr))
	}
	var a accepted
	accept := a.accept
	return func() (socket, error) {
		a.fd, a.err = -1, nil
		if err := raw.Read(accept); err != nil {
			return nil, err // stopped
		}
		if a.err != nil {
			return nil, os.NewSyscallError("accept4", a.err)
		}
		return os.NewFile(uintptr(a.fd), "client"), nil
	}, func() { f.Close() }, nil
}

// accepted is the RawConn.Read callback of acceptor, and what it got.
type accepted struct {
	fd  int
	err error
}

func (a *accepted) accept(lfd uintptr) bool {
	for {
		fd, errno := sysAccept4(lfd)
		switch errno {
		case 0:
			a.fd = int(fd)
			_ = sysInq(a.fd) // without it, reads go on to EAGAIN
			return true
		case syscall.EINTR, syscall.ECONNABORTED:
			// A connection reset while it waited in the backlog: the
			// next one.
		case syscall.EAGAIN:
			return false
		default:
			a.err = errno
			return true
		}
	}
}

// peerAddr is c's remote address, for logs.
func peerAddr(c socket) string {
	if tc, ok := c.(*net.TCPConn); ok {
		return tc.RemoteAddr().String()
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return "?"
	}
	var sa syscall.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = syscall.Getpeername(int(fd)) }); err != nil || serr != nil {
		return "?"
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}).String()
	case *syscall.SockaddrInet6:
		return (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}).String()
	}
	return "?"
}
