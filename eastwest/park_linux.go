package eastwest

import (
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"
)

// parkIdleAfter is how long a direction waits for bytes before it gives
// up its goroutine.
const parkIdleAfter = time.Second

// While pollerBudget fresh directions (those that took a goroutine less
// than parkIdleAfter ago: new connections, and idle ones that woke) hold
// goroutines, fresh directions park once idle for parkCrowdedAfter: a
// burst of connections then holds a goroutine for each direction in its
// first exchanges, not for each one opened in the last second or two. Go
// keeps the descriptor of every goroutine that ever ran at once, for
// reuse, never freed. Directions busy for longer keep the parkIdleAfter
// rule, so busy connections do not park between their exchanges, and
// only the fresh are swept that often.
const (
	pollerBudget     = 128
	parkCrowdedAfter = 25 * time.Millisecond
)

// Park states of a half.
const (
	halfRunning int32 = iota // a goroutine copies it, or waits in Go's poller
	halfParked               // no goroutine: its source is in the parker's epoll
)

// A parker lets idle connections wait without goroutines. Go's poller
// needs a goroutine per waiting direction, 2 KiB of stack at least, more
// than everything else an idle connection costs. Every parkIdleAfter the
// parker asks the directions that moved nothing since the last sweep to
// park (and, when crowded, the fresh ones every parkCrowdedAfter): each
// clears its goroutine and registers its source socket in the parker's
// own epoll; when bytes (or a close) arrive, a new goroutine takes the
// direction over. Busy connections never park, so their path is Go's
// poller alone.
type parker struct {
	epfd int
	wake [2]int // a pipe in the epoll; closing its write end stops run
	done chan struct{}

	conns *liveConns    // where the sweeper looks for idle directions
	hurry chan struct{} // crowded: sweep the fresh at parkCrowdedAfter from now on
	epoch time.Time     // of the halves' heldSince

	freshMu sync.Mutex
	fresh   []*half // directions that took a goroutine lately, each once

	mu     sync.Mutex
	parked map[uint64]*half
	next   uint64
}

// newParker returns a parker, or nil (no parking) if the kernel refuses
// an epoll instance.
func newParker(log *slog.Logger, conns *liveConns) *parker {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		log.Warn("idle connections will keep their goroutines: epoll_create1 failed", "err", err)
		return nil
	}
	p := &parker{epfd: epfd, done: make(chan struct{}), parked: map[uint64]*half{}, conns: conns, hurry: make(chan struct{}, 1), epoch: time.Now()}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		log.Warn("idle connections will keep their goroutines: pipe2 failed", "err", err)
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // token 0
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		log.Warn("idle connections will keep their goroutines: epoll_ctl failed", "err", err)
		return nil
	}
	return p
}

// closeFDs closes what newParker opened, when it gives up.
func (p *parker) closeFDs() {
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
	syscall.Close(p.epfd)
}

// run resumes parked directions with resume, and sweeps, until stop.
func (p *parker) run(resume func(*half)) {
	if p == nil {
		return
	}
	stopSweeping := make(chan struct{})
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		next := time.NewTimer(parkIdleAfter)
		defer next.Stop()
		hurried := false
		lastFull := time.Now()
		for {
			select {
			case <-stopSweeping:
				return
			case <-p.hurry:
				if !hurried {
					hurried = true
					next.Reset(parkCrowdedAfter)
				}
			case <-next.C:
				fresh := p.pruneFresh()
				if !hurried || time.Since(lastFull) >= parkIdleAfter {
					lastFull = time.Now()
					p.sweep()
				} else {
					for _, h := range fresh {
						p.nudge(h)
					}
				}
				hurried = len(fresh) >= pollerBudget
				if hurried {
					next.Reset(parkCrowdedAfter)
				} else {
					next.Reset(parkIdleAfter)
				}
			}
		}
	}()
	defer func() {
		close(stopSweeping)
		<-swept
		syscall.Close(p.wake[0])
		syscall.Close(p.epfd)
		close(p.done)
	}()
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if token == 0 {
				return
			}
			p.mu.Lock()
			h := p.parked[token]
			p.mu.Unlock()
			if h != nil && p.claim(h) {
				p.took(h)
				resume(h)
			}
		}
	}
}

// stop ends run and waits for it; parked directions must have been
// cancelled (every connection closed) before.
func (p *parker) stop() {
	if p == nil {
		return
	}
	syscall.Close(p.wake[1]) // the read end becomes readable: EOF
	<-p.done
}

// took is told each time directions take goroutines (a connection's
// start, a resume): it lists them as fresh, and hurries the sweeper once
// pollerBudget of them are. Directions of ended connections stay listed
// until a prune: the list is pruned before it counts as crowded, or a
// stream of short connections would hurry the sweeper with none idle.
func (p *parker) took(hs ...*half) {
	if p == nil {
		return
	}
	now := time.Since(p.epoch)
	p.freshMu.Lock()
	for _, h := range hs {
		h.heldSince = now
		if !h.listed {
			h.listed = true
			p.fresh = append(p.fresh, h)
		}
	}
	if len(p.fresh) >= pollerBudget {
		p.pruneLocked(now)
	}
	crowded := len(p.fresh) >= pollerBudget
	p.freshMu.Unlock()
	if crowded {
		select {
		case p.hurry <- struct{}{}:
		default:
		}
	}
}

// pruneFresh drops from the fresh list the directions parked, closed, or
// holding their goroutine for parkIdleAfter already, and returns the rest.
func (p *parker) pruneFresh() []*half {
	p.freshMu.Lock()
	defer p.freshMu.Unlock()
	p.pruneLocked(time.Since(p.epoch))
	return slices.Clone(p.fresh)
}

// pruneLocked is pruneFresh's work; p.freshMu is held.
func (p *parker) pruneLocked(now time.Duration) {
	kept := p.fresh[:0]
	for _, h := range p.fresh {
		if h.state.Load() == halfRunning && !h.r.closed.Load() && now-h.heldSince < parkIdleAfter {
			kept = append(kept, h)
		} else {
			h.listed = false
		}
	}
	clear(p.fresh[len(kept):])
	p.fresh = kept
}

// sweep nudges every direction of every connection.
func (p *parker) sweep() {
	p.conns.each(func(r *relayed) {
		if !r.started.Load() {
			return // still reading its hello or connecting
		}
		for i := range r.halves {
			p.nudge(&r.halves[i])
		}
	})
}

// nudge asks h to park if it waits and moved nothing since the sweep
// before: a read deadline in the past wakes its goroutine.
func (p *parker) nudge(h *half) {
	moved := h.moved.Load()
	if h.waiting.Load() && h.state.Load() == halfRunning && moved == h.seen && !h.kicked.Load() {
		h.kicked.Store(true)
		h.src.SetReadDeadline(time.Unix(1, 0))
	}
	h.seen = moved
}

// park registers h's source in the epoll; true means h's goroutine must
// end, as the parker now owns the direction. False means the caller goes
// on copying (the connection closed meanwhile, or epoll refused).
func (p *parker) park(h *half) bool {
	h.kicked.Store(false)
	if p == nil {
		return false
	}
	if err := h.src.SetReadDeadline(time.Time{}); err != nil {
		return false
	}
	raw, err := h.src.SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	p.next++
	h.token = p.next
	p.parked[h.token] = h
	p.mu.Unlock()
	h.state.Store(halfParked)
	var addErr error
	ctlErr := raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
			Fd: int32(uint32(h.token)), Pad: int32(uint32(h.token >> 32))}
		addErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	h.r.g.stats.parks.Add(1)
	if ctlErr == nil && addErr == nil && !h.r.closed.Load() {
		return true
	}
	// Whoever claims h runs it: this goroutine, or a close or an event
	// that came first.
	return !p.claim(h)
}

// claim takes a parked h out of the epoll; false if another did first.
func (p *parker) claim(h *half) bool {
	if !h.state.CompareAndSwap(halfParked, halfRunning) {
		return false
	}
	h.r.g.stats.resumes.Add(1)
	h.waiting.Store(false) // not the sweeper's to kick until it waits again
	p.mu.Lock()
	delete(p.parked, h.token)
	p.mu.Unlock()
	if raw, err := h.src.SyscallConn(); err == nil {
		// Control holds the fd open, so the number cannot be another
		// socket's by now; once closed, the kernel removed it already.
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
	}
	return true
}
