package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/federate/federate/registry/store"
)

// storeLogEvery bounds how often repeated store failures are logged.
const storeLogEvery = time.Minute

// storeHealth tracks whether the hub's store writes succeed, so that a full
// disk shows in the log, the metrics, readiness and status.
type storeHealth struct {
	mu           sync.Mutex // guards the fields below
	lastErr      error
	failingSince time.Time
	failures     uint64
	lastLogged   time.Time
}

// write persists ops and notes whether the disk took them.
func (s *Server) write(ctx context.Context, ops ...store.Op) error {
	err := s.backend.Write(ctx, ops...)
	s.noteWrite(err)
	return err
}

// writeIf is write for backend.WriteIf.
func (s *Server) writeIf(ctx context.Context, bucket, key string, want []byte, ops ...store.Op) (bool, error) {
	ok, err := s.backend.WriteIf(ctx, bucket, key, want, ops...)
	s.noteWrite(err)
	return ok, err
}

// noteWrite records the outcome of a store write. A write given up by its
// caller (a cancelled call, a stopping hub) says nothing about the disk.
func (s *Server) noteWrite(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrClosed) {
		return
	}
	h := &s.storeHealth
	now := s.cfg.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		if h.lastErr != nil {
			s.log.Info("store writes succeed again", "store", s.backend.Where(), "failed_for", now.Sub(h.failingSince).Round(time.Second), "failures", h.failures)
		}
		h.lastErr, h.failingSince = nil, time.Time{}
		return
	}
	h.failures++
	if h.lastErr == nil {
		h.failingSince = now
	}
	h.lastErr = err
	if now.Sub(h.lastLogged) >= storeLogEvery {
		h.lastLogged = now
		s.log.Error("store write failed: the hub refuses changes until its writes succeed; "+s.backend.Remedy(),
			"store", s.backend.Where(), "err", err, "failures", h.failures, "failing_since", h.failingSince.UTC().Format(time.RFC3339))
	}
}

// StoreError reports why the hub's store writes fail, or nil while they
// succeed: a hub that cannot store changes is not ready.
func (s *Server) StoreError() error {
	h := &s.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastErr == nil {
		return nil
	}
	return fmt.Errorf("hub: store writes fail since %s (%d failures): %v; %s",
		h.failingSince.UTC().Format(time.RFC3339), h.failures, h.lastErr, s.backend.Remedy())
}

// storeState is the store's health as status and metrics report it.
type storeState struct {
	lastErr  error // nil while writes succeed
	since    time.Time
	failures uint64
}

func (s *Server) storeStatus() storeState {
	h := &s.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	return storeState{lastErr: h.lastErr, since: h.failingSince, failures: h.failures}
}
