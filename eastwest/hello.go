package eastwest

import (
	"sync"

	"github.com/federate/federate/eastwest/sni"
)

// helloScratch is where a ClientHello is read: a connection takes one
// only while it reads, and keeps it only once a whole hello is in it,
// until the hello is forwarded. Waiting costs a connection no buffer.
var helloScratch = sync.Pool{New: func() any {
	b := make([]byte, sni.MaxHelloSize)
	return &b
}}

// helloRead reads a ClientHello inside syscall.RawConn.Read. Bytes of a
// hello that is not complete yet are kept in partial, which grows only as
// they arrive: a client that sends one byte and stalls costs one byte.
type helloRead struct {
	partial []byte
	scratch *[]byte // holds the whole hello once done
	n       int     // bytes received
	hello   sni.ClientHello
	err     error
	tryOnce bool // read what is there and return, without waiting
}

// bytes returns what was received, the hello and anything after it, all
// to be forwarded.
func (h *helloRead) bytes() []byte { return (*h.scratch)[:h.n] }

// release gives the scratch buffer back once the bytes are forwarded.
func (h *helloRead) release() {
	if h.scratch != nil {
		helloScratch.Put(h.scratch)
		h.scratch = nil
	}
}
