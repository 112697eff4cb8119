//go:build unix

package eastwest

import (
	"errors"
	"io"
	"syscall"
	"time"

	"github.com/federate/federate/eastwest/sni"
)

// read is the RawConn.Read callback. It reads until the hello is whole,
// fails, or the socket has nothing more (EAGAIN): then it keeps what came
// in partial, gives the scratch back and returns false to wait until fd
// is readable. Waiting only on EAGAIN matters: the poller is
// edge-triggered.
func (h *helloRead) read(fd uintptr) bool {
	buf := helloScratch.Get().(*[]byte)
	have := copy(*buf, h.partial)
	kept := have // the bytes partial holds
	for {
		n, err := sysRead(int(fd), (*buf)[have:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			h.partial = append(h.partial, (*buf)[kept:have]...)
			helloScratch.Put(buf)
			return h.tryOnce
		case err != nil:
			h.err = err
		case n == 0:
			h.err = io.EOF
		}
		if h.err != nil {
			helloScratch.Put(buf)
			return true
		}
		h.n += n
		have += n
		hello, perr := sni.ParseClientHello((*buf)[:have])
		if perr == nil {
			h.hello, h.scratch, h.partial = hello, buf, nil
			return true
		}
		if !errors.Is(perr, sni.ErrIncomplete) {
			h.err = perr
			helloScratch.Put(buf)
			return true
		}
		// The parser says ErrTooLarge before the buffer fills up.
	}
}

// readHello reads until c has sent a whole ClientHello, within
// HelloTimeout of now. On success the caller forwards h.bytes() and
// calls h.release.
func (g *Gateway) readHello(c socket, h *helloRead) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	// With TCP_DEFER_ACCEPT the hello is there when the connection is:
	// a first try without a deadline saves arming and clearing a timer.
	h.tryOnce = true
	if err := raw.Read(h.read); err != nil {
		return err
	}
	h.tryOnce = false
	if h.err != nil || h.scratch != nil {
		return h.err
	}
	if err := c.SetReadDeadline(time.Now().Add(g.cfg.HelloTimeout)); err != nil {
		return err
	}
	if err := raw.Read(h.read); err != nil {
		return err
	}
	if h.err != nil {
		return h.err
	}
	return c.SetReadDeadline(time.Time{})
}
