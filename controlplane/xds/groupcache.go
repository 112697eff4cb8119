package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// servedTypes are the resource types a snapshot may carry; a request for
// any other type is held open and never answered.
var servedTypes = func() []resourcev3.Type {
	var out []resourcev3.Type
	for t := types.ResponseType(0); t < types.UnknownType; t++ {
		if url, err := cachev3.GetResponseTypeURL(t); err == nil {
			out = append(out, url)
		}
	}
	return out
}()

// groupCache serves each node group from one linear cache per resource
// type, so that a new snapshot costs what changed in it: a resource keeps
// its version (and its encoding, made once for every stream) until its
// content changes; a delta client is sent only the resources that
// changed and the names of those removed; a state-of-the-world client of
// endpoints gets only the changed assignments among those it names (the
// protocol lets a client keep what a response leaves out for that type),
// and listeners and clusters, which the protocol sends whole, only when one
// of them changed. The snapshot cache it replaces versioned a whole type at
// once and hashed every resource of every snapshot for delta streams.
type groupCache struct {
	log    cacheLogger
	mu     sync.Mutex
	groups map[string]*nodeGroup
}

// nodeGroup is the state of one group: nil caches until its first
// snapshot, and the watches that came before it.
type nodeGroup struct {
	caches   map[resourcev3.Type]*cachev3.LinearCache
	held     map[resourcev3.Type]map[string]types.Resource // as last set
	versions map[resourcev3.Type]uint64                    // updates per type, the linear cache's version
	pending  map[*pendingWatch]struct{}
}

// pendingWatch is a watch made before its group had a snapshot; once the
// group has one it becomes a watch of the linear cache (cancel).
type pendingWatch struct {
	create func(*cachev3.LinearCache) (func(), error)
	typ    resourcev3.Type
	cancel func()
}

var _ cachev3.Cache = (*groupCache)(nil)

func newGroupCache(log *slog.Logger) *groupCache {
	return &groupCache{log: cacheLogger{log}, groups: make(map[string]*nodeGroup)}
}

func (c *groupCache) groupLocked(name string) *nodeGroup {
	g := c.groups[name]
	if g == nil {
		g = &nodeGroup{pending: make(map[*pendingWatch]struct{})}
		c.groups[name] = g
	}
	return g
}

// CreateWatch implements cachev3.Cache for state-of-the-world streams.
func (c *groupCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	return c.watch(nodeGroups{}.ID(req.GetNode()), req.GetTypeUrl(), func(lc *cachev3.LinearCache) (func(), error) {
		return lc.CreateWatch(req, sub, out)
	})
}

// CreateDeltaWatch implements cachev3.Cache for delta streams.
func (c *groupCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	return c.watch(nodeGroups{}.ID(req.GetNode()), req.GetTypeUrl(), func(lc *cachev3.LinearCache) (func(), error) {
		return lc.CreateDeltaWatch(req, sub, out)
	})
}

// Fetch implements cachev3.Cache; the server offers no REST fetch.
func (c *groupCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("xds: fetch is not served; open an ADS stream")
}

func (c *groupCache) watch(group string, typ resourcev3.Type, create func(*cachev3.LinearCache) (func(), error)) (func(), error) {
	if !served(typ) {
		return func() {}, nil // never answered
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groupLocked(group)
	if g.caches != nil {
		return create(g.caches[typ])
	}
	p := &pendingWatch{create: create, typ: typ}
	g.pending[p] = struct{}{}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(g.pending, p)
		if p.cancel != nil {
			p.cancel()
		}
	}, nil
}

func served(typ resourcev3.Type) bool {
	for _, t := range servedTypes {
		if t == typ {
			return true
		}
	}
	return false
}

// set makes snap the group's resources: only the resources whose content
// differs from what the group held are updated, so only they get a new
// version and are sent. A resource that is the same message as before (a
// builder that reuses what did not change) costs one pointer comparison.
// It reports whether anything changed.
func (c *groupCache) set(group string, snap *cachev3.Snapshot) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groupLocked(group)
	first := g.caches == nil
	if first {
		g.caches = make(map[resourcev3.Type]*cachev3.LinearCache, len(servedTypes))
		g.held = make(map[resourcev3.Type]map[string]types.Resource, len(servedTypes))
		g.versions = make(map[resourcev3.Type]uint64, len(servedTypes))
		for _, typ := range servedTypes {
			g.caches[typ] = cachev3.NewLinearCache(typ, cachev3.WithLogger(c.log))
			g.held[typ] = make(map[string]types.Resource)
		}
	}
	changed := false
	for _, typ := range servedTypes {
		update, remove := diffResources(g.held[typ], snap.GetResourcesAndTTL(typ))
		if len(update) == 0 && len(remove) == 0 {
			continue
		}
		changed = true
		for name, r := range update {
			g.held[typ][name] = r
		}
		for _, name := range remove {
			delete(g.held[typ], name)
		}
		if err := g.caches[typ].UpdateResources(update, remove); err != nil {
			return changed, err
		}
		g.versions[typ]++
	}
	if first {
		for p := range g.pending {
			delete(g.pending, p)
			cancel, err := p.create(g.caches[p.typ])
			if err != nil {
				return changed, err
			}
			p.cancel = cancel
		}
	}
	return changed, nil
}

// diffResources returns the resources of next that differ from held, by
// name, and the names held that next lacks.
func diffResources(held map[string]types.Resource, next map[string]types.ResourceWithTTL) (map[string]types.Resource, []string) {
	update := make(map[string]types.Resource)
	for name, r := range next {
		old, ok := held[name]
		if ok && (old == r.Resource || proto.Equal(old, r.Resource)) {
			continue
		}
		update[name] = r.Resource
	}
	var remove []string
	for name := range held {
		if _, ok := next[name]; !ok {
			remove = append(remove, name)
		}
	}
	return update, remove
}

// version is the version the group's state-of-the-world clients of typ
// were last sent ("" before the group's first snapshot).
func (c *groupCache) version(group string, typ resourcev3.Type) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	if g == nil || g.caches == nil || !served(typ) {
		return ""
	}
	return strconv.FormatUint(g.versions[typ], 10)
}

// cacheLogger keeps the linear caches' warnings and errors and drops
// their per-watch chatter.
type cacheLogger struct{ log *slog.Logger }

func (cacheLogger) Debugf(string, ...any) {}
func (cacheLogger) Infof(string, ...any)  {}
func (l cacheLogger) Warnf(format string, args ...any) {
	l.log.Warn("xds cache: " + fmt.Sprintf(format, args...))
}
func (l cacheLogger) Errorf(format string, args ...any) {
	l.log.Error("xds cache: " + fmt.Sprintf(format, args...))
}
