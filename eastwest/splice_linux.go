package eastwest

import (
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// Linux flags and fcntl commands the syscall package does not name.
const (
	spliceMove     = 0x1
	spliceNonblock = 0x2
	fSetPipeSize   = 1031 // F_SETPIPE_SZ
	// maxSplice is the pipe size asked for and the most one splice moves.
	maxSplice = 1 << 20
)

// A pipe carries one direction's bytes from socket to socket inside the
// kernel. A direction takes one from the pool only while its bytes flow
// and gives it back when the source has nothing more to read, so an idle
// connection holds its two sockets and no pipe.
type pipe struct {
	r, w    int
	size    int // bytes in the pipe
	cleanup runtime.Cleanup
}

var pipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return err
	}
	// A larger pipe moves more per system call; the kernel may refuse.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSize, maxSplice)
	p := &pipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, closeFDs, fds)
	return p
}}

func closeFDs(fds [2]int) {
	syscall.Close(fds[0])
	syscall.Close(fds[1])
}

func getPipe() (*pipe, error) {
	switch v := pipes.Get().(type) {
	case *pipe:
		return v, nil
	case error:
		return nil, v
	}
	panic("unreachable")
}

// direction is one way of a relayed connection. Its fill and flush run
// inside syscall.RawConn.Read and Write.
type direction struct {
	pipe *pipe
	err  error
	eof  bool
}

// copyConn moves src's bytes to dst with splice(2) until src ends, then
// closes dst's write half. It returns an error if either side failed.
func copyConn(dst, src *net.TCPConn, bytes *atomic.Uint64) error {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	d := new(direction)
	fill, flush := d.fill, d.flush
	defer d.release()
	for {
		if err := srcRaw.Read(fill); err != nil {
			return err
		}
		if d.err != nil {
			return d.err
		}
		if d.eof {
			return dst.CloseWrite()
		}
		n := d.pipe.size
		if err := dstRaw.Write(flush); err != nil {
			return err
		}
		if d.err != nil {
			return d.err
		}
		bytes.Add(uint64(n))
	}
}

// fill splices what src has into the pipe. With nothing to read it gives
// the pipe back and returns false: RawConn.Read then waits until src is
// readable and calls it again.
func (d *direction) fill(fd uintptr) bool {
	if d.pipe == nil {
		if d.pipe, d.err = getPipe(); d.err != nil {
			return true
		}
	}
	var n int64
	var err error
	for {
		n, err = syscall.Splice(int(fd), nil, d.pipe.w, nil, maxSplice, spliceMove|spliceNonblock)
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == syscall.EAGAIN:
		pipes.Put(d.pipe)
		d.pipe = nil
		return false
	case err != nil:
		d.err = err
	case n == 0:
		d.eof = true
	default:
		d.pipe.size = int(n)
	}
	return true
}

// flush splices the pipe's bytes to dst; false waits until dst is writable.
func (d *direction) flush(fd uintptr) bool {
	for d.pipe.size > 0 {
		n, err := syscall.Splice(d.pipe.r, nil, int(fd), nil, d.pipe.size, spliceMove|spliceNonblock)
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			d.err = err
			return true
		case n == 0:
			d.err = io.ErrShortWrite
			return true
		default:
			d.pipe.size -= int(n)
		}
	}
	return true
}

// release gives an empty pipe back and closes one that still holds bytes.
func (d *direction) release() {
	if d.pipe == nil {
		return
	}
	if d.pipe.size == 0 {
		pipes.Put(d.pipe)
	} else {
		d.pipe.cleanup.Stop()
		closeFDs([2]int{d.pipe.r, d.pipe.w})
	}
	d.pipe = nil
}
