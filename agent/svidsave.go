package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/federate/federate/trust"
)

// svidSaveRetry is how often a SVID that did not save is tried again.
const svidSaveRetry = 2 * time.Second

// svidSaver keeps the agent's SVID in its state directory. The token
// that got the first SVID works once, so a save that fails (a full disk)
// does not stop the agent: it runs on the SVID it holds, and the newest
// SVID not yet saved is tried again until it is on disk.
type svidSaver struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex        // guards pending and serializes saves
	pending *trust.Credential // the newest SVID not on disk, or nil
}

// save writes c, or keeps it for run to write; it reports whether c is
// on disk.
func (s *svidSaver) save(c *trust.Credential) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := c.Save(s.path); err != nil {
		if s.pending == nil {
			s.log.Error("cannot save the SVID in the state directory; the agent runs on the SVID it holds and saves it once it can. "+
				"Free space there: until it is saved, a restart needs a new token from 'federate vm configure'",
				"path", s.path, "err", err)
		}
		s.pending = c
		return false
	}
	if s.pending != nil {
		s.log.Info("SVID saved in the state directory", "path", s.path)
	}
	s.pending = nil
	return true
}

// run tries the pending SVID again every svidSaveRetry until ctx is done.
func (s *svidSaver) run(ctx context.Context) {
	tick := time.NewTicker(svidSaveRetry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		c := s.pending
		s.mu.Unlock()
		if c != nil {
			s.save(c)
		}
	}
}
