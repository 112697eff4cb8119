//go:build !linux

package eastwest

import (
	"io"
)

// copyConn moves h.src's bytes to h.dst until src ends, then closes dst's
// write half. It returns an error if either side failed; it never parks.
func copyConn(h *half, _ *parker) (parked bool, err error) {
	n, err := io.Copy(h.dst, h.src)
	h.bytes.Add(uint64(n))
	if err != nil {
		return false, err
	}
	return false, endWrite(h)
}
