//go:build !linux

package eastwest

import "net"

// acceptor returns a function that accepts lis's next connection; closing
// lis ends it.
func acceptor(lis *net.TCPListener) (next func() (socket, error), stop func(), err error) {
	return func() (socket, error) {
		c, err := lis.AcceptTCP()
		if err != nil {
			return nil, err
		}
		return c, nil
	}, func() {}, nil
}

// peerAddr is c's remote address, for logs.
func peerAddr(c socket) string {
	if tc, ok := c.(*net.TCPConn); ok {
		return tc.RemoteAddr().String()
	}
	return "?"
}
