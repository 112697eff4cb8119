package eastwest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// connectAndSend connects to addr and sends first, on the calling
// goroutine and without waiting in the common case. net.Dialer parks the
// goroutine until the socket is writable, then asks the kernel whether the
// connect succeeded (SO_ERROR), for the peer's and its own address, and
// arms a deadline and a context callback around it: a profile put a
// quarter of the gateway's CPU per connection in the dial. Here the hello
// is written straight after connect: on a nearby upstream the handshake
// is done by then and the write succeeds; if not, the write says EAGAIN
// (still connecting), or why the connect failed, and only then does the
// goroutine wait, with ConnectTimeout and the drain as a write deadline.
// An endpoint that is a name, not an address, goes through net.Dialer.
func (g *Gateway) connectAndSend(ctx context.Context, addr string, first []byte) (socket, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr().Zone() != "" {
		return g.dialAndSend(ctx, addr, first)
	}
	ip := ap.Addr().Unmap()
	family := syscall.AF_INET
	if !ip.Is4() {
		family = syscall.AF_INET6
	}
	fd, err := sysSocket(family)
	if err != nil {
		return nil, dialError(addr, "socket", err)
	}
	// As Go does for every TCP connection: relayed pieces must not wait
	// for the ACK of the one before.
	if err := sysNoDelay(fd); err != nil {
		syscall.Close(fd)
		return nil, dialError(addr, "setsockopt", err)
	}
	_ = sysInq(fd) // without it, reads go on to EAGAIN
	switch err := sysConnect(fd, ip.AsSlice(), ap.Port()); err {
	case nil, syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR:
	default:
		syscall.Close(fd)
		return nil, dialError(addr, "connect", err)
	}
	f := os.NewFile(uintptr(fd), addr) // non-blocking, so on Go's poller
	if err := g.sendFirst(ctx, f, first); err != nil {
		f.Close()
		return nil, dialError(addr, "connect", err)
	}
	return f, nil
}

func dialError(addr, call string, err error) error {
	return fmt.Errorf("eastwest: connect to %s: %s: %w", addr, call, err)
}

// sendFirst writes first to a socket that may still be connecting.
func (g *Gateway) sendFirst(ctx context.Context, f *os.File, first []byte) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	s := sender{rest: first}
	if err := raw.Write(s.write); err != nil {
		return err
	}
	if s.err != nil || len(s.rest) == 0 {
		return s.err
	}
	// Still connecting, or (a hello larger than a fresh socket's buffer)
	// full: wait until writable, within ConnectTimeout, or the drain.
	if err := f.SetWriteDeadline(time.Now().Add(g.cfg.ConnectTimeout)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	s.wait = true
	err = raw.Write(s.write)
	if !stop() {
		// The drain came, and may have set the deadline after the
		// write succeeded: the socket cannot be used.
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	if s.err != nil {
		return s.err
	}
	return f.SetWriteDeadline(time.Time{})
}

// sender is a RawConn.Write callback that writes rest. Until wait is set
// it returns on EAGAIN instead of waiting, so the caller arms a deadline
// only when a wait is needed.
type sender struct {
	rest []byte
	wait bool
	err  error
}

func (s *sender) write(fd uintptr) bool {
	for len(s.rest) > 0 {
		n, err := sysWrite(int(fd), s.rest)
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return !s.wait
		case err != nil:
			s.err = err
			return true
		default:
			s.rest = s.rest[n:]
		}
	}
	return true
}

// shutdownWrite sends the FIN of a socket connectAndSend made.
func shutdownWrite(s socket) error {
	raw, err := s.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = sysShutdownWrite(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("eastwest: shutdown: %w", serr)
	}
	return nil
}
