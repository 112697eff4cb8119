package eastwest

import "syscall"

// deferAccept asks the kernel to hand over a connection only once its
// first bytes (the ClientHello) have arrived, for up to HelloTimeout: the
// gateway's first read then finds the hello instead of waiting for it,
// which saves a wake-up per connection, and a client that connects and
// sends nothing costs the gateway nothing until then. A connection that
// closes without data is still handed over (the FIN counts as data) and
// counted as no_data; one reset before its first byte never reaches the
// gateway.
func deferAccept(fd uintptr) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, int(DefaultHelloTimeout.Seconds()))
}
