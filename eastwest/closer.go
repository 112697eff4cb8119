package eastwest

import (
	"sync"
	"time"
)

// Closing a socket is the one system call of a connection's path that
// tells Go's scheduler (os.File.Close cannot be made raw: it takes the
// socket off the poller first). Made while the runtime's monitor thread
// sleeps, which it does whenever the process was idle, it wakes the
// monitor, which then polls every 20 µs until the process idles again: a
// profile put a sixth of the gateway's CPU per connection in that thread.
// A connection that ended cleanly has sent both its FINs already
// (endWrite), so its sockets are closed in batches instead: one wake per
// batch, not two per connection.
const (
	// closeBatch is how many sockets wait to be closed at most.
	closeBatch = 64
	// closeWithin is how long a socket waits at most.
	closeWithin = 50 * time.Millisecond
)

// closer closes the sockets of ended connections in batches.
type closer struct {
	within  time.Duration // closeWithin, but in tests
	mu      sync.Mutex
	pending []socket
	timer   *time.Timer // armed while sockets wait
}

// later closes sockets in a batch within c.within.
func (c *closer) later(sockets ...socket) {
	c.mu.Lock()
	if c.timer == nil {
		c.timer = time.AfterFunc(c.within, c.flush)
	} else if len(c.pending) == 0 {
		c.timer.Reset(c.within)
	}
	c.pending = append(c.pending, sockets...)
	if len(c.pending) < closeBatch {
		c.mu.Unlock()
		return
	}
	batch := c.take()
	c.mu.Unlock()
	closeSockets(batch)
}

// flush closes every waiting socket now.
func (c *closer) flush() {
	c.mu.Lock()
	batch := c.take()
	c.mu.Unlock()
	closeSockets(batch)
}

// take empties the batch; c.mu is held.
func (c *closer) take() []socket {
	batch := c.pending
	c.pending = nil
	if c.timer != nil {
		c.timer.Stop()
	}
	return batch
}

func closeSockets(batch []socket) {
	for _, s := range batch {
		s.Close()
	}
}
