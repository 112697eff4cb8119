//go:build !unix

package eastwest

import (
	"errors"
	"time"

	"github.com/federate/federate/eastwest/sni"
)

// readHello reads until c has sent a whole ClientHello, within
// HelloTimeout of now. Without raw non-blocking reads it holds a scratch
// buffer while it waits.
func (g *Gateway) readHello(c socket, h *helloRead) error {
	if err := c.SetReadDeadline(time.Now().Add(g.cfg.HelloTimeout)); err != nil {
		return err
	}
	h.scratch = helloScratch.Get().(*[]byte)
	for {
		n, err := c.Read((*h.scratch)[h.n:])
		h.n += n
		if n > 0 {
			hello, perr := sni.ParseClientHello((*h.scratch)[:h.n])
			if perr == nil {
				h.hello = hello
				return c.SetReadDeadline(time.Time{})
			}
			if !errors.Is(perr, sni.ErrIncomplete) {
				return perr
			}
		}
		if err != nil {
			return err
		}
	}
}
