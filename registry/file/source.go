package file

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/federate/federate/registry/registrypb"
)

// Source watches a directory of service files by polling it.
type Source struct {
	cfg      Config
	interval time.Duration
	log      *slog.Logger

	mu          sync.Mutex // guards the field below
	notExported []NotExported
}

// New returns a Source for cfg. It does no I/O; Run reads the files.
func New(cfg Config) *Source {
	s := &Source{cfg: cfg, interval: cfg.Interval, log: cfg.Logger}
	if s.interval <= 0 {
		s.interval = DefaultInterval
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("dir", cfg.Dir)
	return s
}

// Run loads the directory, calls onChange with the exported services, then
// polls the directory every interval and calls onChange again whenever the
// exported set changes. onChange runs on Run's goroutine and owns the slice
// it is given.
//
// If the first load fails, Run returns its error, so that a broken
// configuration is seen at start. Later, files are taken one by one, as Dir
// takes them: a file that does not parse keeps its last good documents, and
// a file removed is gone. When the files in force do not make a set (two
// declare the same host, say), or the directory does not list, that is
// logged and the last good set stays in force until they do. Run returns
// nil when ctx is cancelled.
func (s *Source) Run(ctx context.Context, onChange func([]*registrypb.Service)) error {
	if ctx.Err() != nil {
		return nil
	}
	td, err := s.cfg.trustDomain()
	if err != nil {
		return err
	}
	dir := NewDir(s.cfg.Dir, s.log)
	docs, err := dir.Parse()
	if err == nil {
		err = dir.Problems()
	}
	if err != nil {
		return err
	}
	set, err := build(s.cfg, td, docs)
	if err != nil {
		return err
	}
	current := set.services
	s.log.Info("file registry: loaded services", "services", len(current))
	s.reportNotExported(set.notExported)
	onChange(clone(current))

	t := time.NewTicker(s.interval)
	defer t.Stop()
	var failing string // the last load error logged, until a load succeeds
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		docs, err := dir.Parse()
		var set serviceSet
		if err == nil {
			set, err = build(s.cfg, td, docs)
		}
		if err != nil {
			// Log each distinct failure once rather than on every poll.
			if msg := err.Error(); msg != failing {
				failing = msg
				s.logFailure(err)
			}
			continue
		}
		if failing != "" {
			failing = ""
			s.log.Info("file registry: service files load again")
		}
		s.reportNotExported(set.notExported)
		next := set.services
		if equal(current, next) {
			continue
		}
		current = next
		s.log.Info("file registry: services changed", "services", len(current))
		onChange(clone(current))
	}
}

// NotExported returns the ServiceEntries of the files in force that no
// ServiceExport exports, and the ServiceExports that name no ServiceEntry,
// for the control plane's status. It is safe to call while Run runs.
func (s *Source) NotExported() []NotExported {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.notExported)
}

// reportNotExported keeps the set for NotExported and logs each object
// that is newly not exported, in one line, so that an Istio-valid
// ServiceEntry without its ServiceExport is never silently left out.
func (s *Source) reportNotExported(next []NotExported) {
	s.mu.Lock()
	prev := s.notExported
	s.notExported = next
	s.mu.Unlock()
	for _, n := range next {
		if slices.ContainsFunc(prev, func(p NotExported) bool { return p.Ref == n.Ref && p.Reason == n.Reason }) {
			continue
		}
		attrs := []any{"object", n.Ref, "file", n.File, "line", n.Line, "reason", n.Reason}
		if n.Host != "" {
			attrs = append(attrs, "host", n.Host)
		}
		s.log.Warn("file registry: not exported", attrs...)
	}
}

func (s *Source) logFailure(err error) {
	attrs := []any{"error", err}
	if fe, ok := errors.AsType[*FileError](err); ok {
		attrs = append(attrs, "file", fe.File)
		if fe.Document > 0 {
			attrs = append(attrs, "document", fe.Document, "line", fe.Line)
		}
	}
	s.log.Warn("file registry: cannot load service files; keeping the last good services", attrs...)
}

func equal(a, b []*registrypb.Service) bool {
	return slices.EqualFunc(a, b, func(x, y *registrypb.Service) bool { return proto.Equal(x, y) })
}

// clone copies services so that a caller cannot change Run's copy.
func clone(services []*registrypb.Service) []*registrypb.Service {
	out := make([]*registrypb.Service, len(services))
	for i, svc := range services {
		out[i] = proto.CloneOf(svc)
	}
	return out
}
