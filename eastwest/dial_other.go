//go:build !linux

package eastwest

import (
	"context"
	"fmt"
)

// connectAndSend connects to addr and sends first.
func (g *Gateway) connectAndSend(ctx context.Context, addr string, first []byte) (socket, error) {
	return g.dialAndSend(ctx, addr, first)
}

// shutdownWrite is for sockets other than *net.TCPConn, which only Linux
// makes.
func shutdownWrite(s socket) error {
	return fmt.Errorf("eastwest: cannot shut down a %T", s)
}
