package cli

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"k8s.io/klog/v2"
)

// klogTarget is the logger klog's output goes to, once bridged.
var (
	klogTarget atomic.Pointer[slog.Logger]
	klogOnce   sync.Once
)

// BridgeKlog sends klog's output (client-go, apimachinery) through log,
// so that a process's logs have one format and one level. Call it before
// starting anything that logs through klog. klog's logger may be set only
// once, before its readers start; it is set once to a handler that
// forwards to the latest log, so that tests running several commands in
// one process stay race-free.
func BridgeKlog(log *slog.Logger) {
	klogTarget.Store(log)
	klogOnce.Do(func() { klog.SetSlogLogger(slog.New(forward{})) })
}

// forward is a slog.Handler that hands each record to klogTarget's
// handler, with the attributes and groups klog added on the way.
type forward struct {
	ops []func(slog.Handler) slog.Handler
}

func (f forward) target() slog.Handler {
	h := klogTarget.Load().Handler()
	for _, op := range f.ops {
		h = op(h)
	}
	return h
}

func (f forward) Enabled(ctx context.Context, l slog.Level) bool {
	return f.target().Enabled(ctx, l)
}

func (f forward) Handle(ctx context.Context, r slog.Record) error {
	return f.target().Handle(ctx, r)
}

func (f forward) WithAttrs(attrs []slog.Attr) slog.Handler {
	return f.with(func(h slog.Handler) slog.Handler { return h.WithAttrs(attrs) })
}

func (f forward) WithGroup(name string) slog.Handler {
	return f.with(func(h slog.Handler) slog.Handler { return h.WithGroup(name) })
}

func (f forward) with(op func(slog.Handler) slog.Handler) forward {
	return forward{ops: append(append([]func(slog.Handler) slog.Handler(nil), f.ops...), op)}
}
