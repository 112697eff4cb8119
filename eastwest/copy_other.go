//go:build !linux

package eastwest

import (
	"io"
	"net"
	"sync/atomic"
)

// copyConn moves src's bytes to dst until src ends, then closes dst's
// write half. It returns an error if either side failed.
func copyConn(dst, src *net.TCPConn, bytes *atomic.Uint64) error {
	n, err := io.Copy(dst, src)
	bytes.Add(uint64(n))
	if err != nil {
		return err
	}
	return dst.CloseWrite()
}
