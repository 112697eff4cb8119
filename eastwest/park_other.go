//go:build !linux

package eastwest

import "log/slog"

// parker parks idle connections on Linux only; elsewhere each waiting
// direction keeps its goroutine.
type parker struct{}

func newParker(*slog.Logger, *liveConns) *parker { return nil }
func (p *parker) run(func(*half))                {}
func (p *parker) stop()                          {}
func (p *parker) took(...*half)                  {}
func (p *parker) park(*half) bool                { return false }
func (p *parker) claim(*half) bool               { return false }
