package eastwest

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
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

// plainBuffers carry small exchanges through user space, where a read and
// a write cost less than two splices through a pipe; and they stand in
// for a pipe when the process has no file descriptor left to make one.
var plainBuffers = sync.Pool{New: func() any {
	b := make([]byte, plainSize)
	return &b
}}

// plainSize is a plain buffer's size. A read that fills it marks a
// direction as bulk: its next reads splice.
const plainSize = 16 << 10

// direction is one way of a relayed connection. It relays inside one
// syscall.RawConn.Read on src, writing each piece to dst with a
// RawConn.Write nested in it. It waits for the poller once a read said
// EAGAIN, or once a read left nothing behind, not even a FIN (TCP_INQ):
// the poller's wake-up for a FIN that came right behind the bytes may
// have been spent on the bytes. Between a fill and its flush it holds
// either a pipe or a plain buffer.
type direction struct {
	half    *half
	dst     syscall.RawConn
	flushTo func(fd uintptr) bool // d.flush, made once
	pipe    *pipe
	buf     *[]byte
	off     int  // in buf, the first byte not yet written
	pending int  // bytes read and not yet written
	bulk    bool // the last read filled a plain buffer or spliced as much
	rd      reader
	// drained: the last read left src empty, so the next fill waits for
	// the poller instead of a read that would say EAGAIN.
	drained bool
	err     error
	eof     bool
}

// copyConn moves h.src's bytes to h.dst until src ends: with read and
// write while they come in small pieces, with splice(2) once they come in
// bulk. Then it closes dst's write half. It returns an error if either
// side failed, and parked if the direction was idle and p took it over.
func copyConn(h *half, p *parker) (parked bool, err error) {
	srcRaw, err := h.src.SyscallConn()
	if err != nil {
		return false, err
	}
	dstRaw, err := h.dst.SyscallConn()
	if err != nil {
		return false, err
	}
	d := &direction{half: h, dst: dstRaw}
	d.flushTo = d.flush
	relay := d.relay
	defer d.release()
	for {
		if err := srcRaw.Read(relay); err != nil {
			if h.kicked.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				if p.park(h) {
					return true, nil
				}
				continue
			}
			return false, err
		}
		if d.err != nil {
			return false, d.err
		}
		return false, endWrite(h) // d.eof
	}
}

// relay is the RawConn.Read callback: it moves what src has to dst and
// returns false to wait until src is readable, true once src ended or
// either side failed.
func (d *direction) relay(fd uintptr) bool {
	for {
		if d.drained {
			// Since the read, this Read has not reset the poller's
			// readiness: bytes or a close that came since wake the wait.
			d.drained = false
			d.half.waiting.Store(true)
			return false
		}
		if !d.fill(fd) {
			return false
		}
		if d.err != nil || d.eof {
			return true
		}
		n := d.pending
		if err := d.dst.Write(d.flushTo); err != nil {
			d.err = err
			return true
		}
		if d.err != nil {
			return true
		}
		d.half.bytes.Add(uint64(n))
	}
}

// fill moves what src has into the pipe (or buffer). With nothing to read
// it gives the pipe back and returns false: relay then waits until src is
// readable.
func (d *direction) fill(fd uintptr) bool {
	d.half.waiting.Store(false)
	if d.pipe == nil && d.buf == nil {
		if d.bulk {
			p, err := getPipe()
			switch {
			case err == nil:
				d.pipe = p
			case !resourceExhausted(err):
				d.err = err
				return true
			}
		}
		if d.pipe == nil {
			d.buf = plainBuffers.Get().(*[]byte)
		}
	}
	n, left := 0, -1
	var err error
	for {
		if d.pipe != nil {
			n, err = sysSplice(int(fd), d.pipe.w, maxSplice)
		} else {
			n, left, err = d.rd.read(int(fd), *d.buf)
		}
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == syscall.EAGAIN:
		d.release()
		d.half.waiting.Store(true)
		return false
	case err != nil:
		d.err = err
	case n == 0:
		d.eof = true
	default:
		d.half.moved.Add(1)
		d.pending, d.off = n, 0
		d.bulk = n >= plainSize
		d.drained = left == 0
	}
	return true
}

// flush writes the pipe's (or buffer's) bytes to dst; false waits until
// dst is writable.
func (d *direction) flush(fd uintptr) bool {
	for d.pending > 0 {
		var n int
		var err error
		if d.pipe != nil {
			n, err = sysSplice(d.pipe.r, int(fd), d.pending)
		} else {
			n, err = sysWrite(int(fd), (*d.buf)[d.off:d.off+d.pending])
		}
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
			d.pending -= n
			d.off += n
		}
	}
	if d.buf != nil {
		d.release() // a bulk direction's next fill takes a pipe
	}
	return true
}

// release gives an empty pipe back and closes one that still holds bytes;
// it gives the buffer back.
func (d *direction) release() {
	if d.buf != nil {
		plainBuffers.Put(d.buf)
		d.buf = nil
	}
	if d.pipe == nil {
		return
	}
	if d.pending == 0 {
		pipes.Put(d.pipe)
	} else {
		d.pipe.cleanup.Stop()
		closeFDs([2]int{d.pipe.r, d.pipe.w})
	}
	d.pipe = nil
}
