package eastwest

import (
	"syscall"
	"unsafe"
)

// The system calls of a connection's path, made with RawSyscall: each is
// on a non-blocking socket and returns at once (EAGAIN rather than wait),
// so the scheduler need not know about it. syscall.Read and the like tell
// it (entersyscall, exitsyscall), and a call made while the process was
// idle wakes the runtime's monitor thread (sysmon, a futex), which then
// polls every 20 µs for a millisecond before it backs off: with a
// connection every few hundred microseconds it never does. A profile put
// 13% of the gateway's CPU per connection in that thread.

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func sysRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func sysWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// sysSplice moves up to n bytes between a socket and a pipe. It never
// waits (SPLICE_F_NONBLOCK on non-blocking sockets), but moving a
// megabyte takes a while: the scheduler is not told, as HAProxy's one
// thread does not hand its work to another, and a profile of bulk relays
// put 6% of the gateway's CPU in the monitor thread it woke.
func sysSplice(in, out, n int) (int, error) {
	m, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceMove|spliceNonblock)
	if e != 0 {
		return -1, e
	}
	return int(m), nil
}

func sysAccept4(lfd uintptr) (int, syscall.Errno) {
	fd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, lfd, 0, 0, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	return int(fd), e
}

func sysSocket(family int) (int, error) {
	fd, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family),
		syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func sysNoDelay(fd int) error {
	on := int32(1)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY,
		uintptr(unsafe.Pointer(&on)), 4, 0)
	return errnoErr(e)
}

// sysConnect starts a connect on a non-blocking socket to ip (4 or 16
// bytes) and port.
func sysConnect(fd int, ip []byte, port uint16) error {
	var e syscall.Errno
	if len(ip) == 4 {
		sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET}
		copy(sa.Addr[:], ip)
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		_, _, e = syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := syscall.RawSockaddrInet6{Family: syscall.AF_INET6}
		copy(sa.Addr[:], ip)
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		_, _, e = syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	return errnoErr(e)
}

func sysShutdownWrite(fd int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), syscall.SHUT_WR, 0)
	return errnoErr(e)
}

// tcpInq is TCP_INQ (Linux 4.18), which the syscall package does not
// name: once set, each recvmsg says in a TCP_CM_INQ message (the same
// number) how many bytes the socket still holds, and more than none when
// a FIN or a reset waits behind the bytes read.
const tcpInq = 36

// sysInq asks fd's reads to say what they left (TCP_INQ).
func sysInq(fd int) error {
	on := int32(1)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, tcpInq,
		uintptr(unsafe.Pointer(&on)), 4, 0)
	return errnoErr(e)
}

// reader reads a socket with recvmsg, to learn what each read left.
type reader struct {
	msg  syscall.Msghdr
	iov  syscall.Iovec
	cmsg [syscall.SizeofCmsghdr + 8]byte
}

// read reads into p like read(2). left is what the socket holds after it
// (TCP_INQ): 0 means nothing, not even a FIN; -1 that the socket did not
// say (TCP_INQ is not set).
func (r *reader) read(fd int, p []byte) (n, left int, err error) {
	if len(p) == 0 {
		return 0, -1, nil
	}
	r.iov.Base = &p[0]
	r.iov.SetLen(len(p))
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = &r.cmsg[0]
	r.msg.SetControllen(len(r.cmsg))
	m, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)), 0)
	if e != 0 {
		return -1, -1, e
	}
	left = -1
	if r.msg.Controllen >= syscall.SizeofCmsghdr+4 {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&r.cmsg[0]))
		if h.Level == syscall.IPPROTO_TCP && h.Type == tcpInq {
			left = int(*(*int32)(unsafe.Pointer(&r.cmsg[syscall.SizeofCmsghdr])))
		}
	}
	return int(m), left, nil
}
