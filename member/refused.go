package member

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A hub that refuses the cluster's credential (the cluster was removed
// from the federation) will not change its mind until the cluster joins
// again: the member tries again every refusedRetry, not at its quick
// backoff, and says so once every refusedRelog, not at every try.
const (
	refusedRetry = 30 * time.Second
	refusedRelog = 10 * time.Minute
)

// hubRefused reports whether err is the hub refusing the cluster's
// credential, and logs it when it has not lately.
func (m *Member) hubRefused(err error) bool {
	if status.Code(err) != codes.PermissionDenied {
		return false
	}
	now := time.Now()
	m.mu.Lock()
	quiet := !m.refusedLogged.IsZero() && now.Sub(m.refusedLogged) < refusedRelog
	if !quiet {
		m.refusedLogged = now
	}
	m.mu.Unlock()
	if !quiet {
		m.log.Error("the hub refuses this cluster's credential; serving the last-known state and trying again every 30s; join again with a new token ('federate join') if the cluster was removed",
			"hub", m.hubAddr(), "err", err)
	}
	return true
}

// waitRefused waits refusedRetry, or until wake (nil: never) or ctx ends;
// false once ctx ended.
func waitRefused(ctx context.Context, wake <-chan struct{}) bool {
	t := time.NewTimer(refusedRetry)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}
