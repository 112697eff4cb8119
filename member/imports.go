package member

import (
	"context"
	"errors"
	"strings"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
)

// metaHeldImports keys, in BucketMeta, the scope that the stored records
// of other clusters are whole for: "*" for every service, else "scoped"
// and the hostnames, one a line. A store without it holds every service, as every
// store did before scoped import.
const metaHeldImports = "held-imports"

// errImportsChanged ends a hub stream to subscribe again with new imports.
var errImportsChanged = errors.New("member: the imports changed")

// Imports returns the services the member imports; nil is every service.
func (m *Member) Imports() *registry.Scope {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scope
}

// SetImports changes the services the member imports (nil: every
// service). It forgets at once what it no longer imports, and subscribes
// to the hub again for what it imports now: the hub sends the new
// imports' records whole.
func (m *Member) SetImports(ctx context.Context, scope *registry.Scope) error {
	m.mu.Lock()
	if m.scope.Equal(scope) {
		m.mu.Unlock()
		return nil
	}
	m.scope = scope
	restream := m.restream
	m.mu.Unlock()
	if err := m.withdraw(ctx, scope); err != nil {
		return err
	}
	m.log.Info("imports changed", "imports", len(scope.Hosts()), "all", scope.All())
	if restream != nil {
		restream(errImportsChanged)
	}
	return nil
}

// withdraw forgets the records of other clusters out of scope, on disk and
// in memory, and narrows the scope the held records are whole for.
func (m *Member) withdraw(ctx context.Context, scope *registry.Scope) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	held := m.held.Intersect(scope)
	ops := []store.Op{{Bucket: store.BucketMeta, Key: metaHeldImports, Value: encodeScope(held)}}
	// On disk first: the set must not run ahead of the file.
	for _, r := range m.set.Withdrawable(scope, m.cfg.Cluster) {
		ops = append(ops, store.Op{Bucket: store.BucketRecords, Key: store.RecordKey(r.Cluster, r.Key)})
	}
	if err := m.cfg.Store.Write(ctx, ops...); err != nil {
		return err
	}
	gone := m.set.Withdraw(scope, m.cfg.Cluster)
	m.held = held
	if len(gone) > 0 {
		m.mu.Lock()
		m.notifyLocked()
		m.mu.Unlock()
	}
	return nil
}

// loadImports reads the scope the stored records are whole for, and
// forgets those the configured imports leave out.
func (m *Member) loadImports(ctx context.Context) error {
	data, err := m.cfg.Store.Get(store.BucketMeta, metaHeldImports)
	if err != nil {
		return err
	}
	m.held = decodeScope(data)
	return m.withdraw(ctx, m.Imports())
}

// markHeld records that the held records are whole for scope, after the
// hub's catch-up for it; imports dropped since are not held.
func (m *Member) markHeld(ctx context.Context, scope *registry.Scope) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	scope = scope.Intersect(m.Imports())
	if m.held.Equal(scope) {
		return
	}
	if err := m.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaHeldImports, Value: encodeScope(scope)}); err != nil {
		m.log.Error("persist the imports held", "err", err)
		return
	}
	m.held = scope
}

// subscription is what a subscribe asks the hub for: the imports, the
// imports to be sent whole, and the versions to resume from.
func (m *Member) subscription(scope *registry.Scope) *hubpb.SubscribeRequest {
	known := m.set.Versions()
	delete(known, m.cfg.Cluster)
	m.writeMu.Lock()
	held := m.held
	m.writeMu.Unlock()
	req := &hubpb.SubscribeRequest{Known: &hubpb.VersionVector{Versions: known}}
	switch {
	case scope.All() && !held.All():
		// Everything is imported now: what was left out comes whole.
		req.Known = nil
	case !scope.All():
		req.Imports = &hubpb.ImportList{Hosts: scope.List()}
		req.NewImports = scope.Beyond(held)
	}
	return req
}

// advance moves the versions of slices whose records the hub or a peer
// left out, as they are not imported.
func (m *Member) advance(ctx context.Context, vv *hubpb.VersionVector) {
	if len(vv.GetVersions()) == 0 {
		return
	}
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	for cluster, v := range vv.GetVersions() {
		if cluster == m.cfg.Cluster || registry.Compare(v, m.set.Version(cluster)) <= 0 {
			continue
		}
		if v.GetIncarnation() > m.set.Version(cluster).GetIncarnation() {
			// An incarnation we hold no record of: the older one's records
			// are gone, first on disk.
			if err := m.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true}); err != nil {
				m.log.Error("drop a replaced incarnation", "peer", cluster, "err", err)
				continue
			}
		}
		m.set.Advance(cluster, v)
	}
}

// serveFetch answers a peer's fetch: the records it imports newer than its
// versions. The answer is whole for our own slice, and for every slice
// when the records we hold are whole for what the peer imports.
func (m *Member) serveFetch(req *hubpb.FetchRequest) *hubpb.FetchResponse {
	want := fetchScope(req.GetImports())
	resp := &hubpb.FetchResponse{Records: m.set.SinceIn(req.GetKnown().GetVersions(), want, nil)}
	complete := make(map[string]*registry.Version)
	m.writeMu.Lock()
	held := m.held
	m.writeMu.Unlock()
	if held.Covers(want) {
		complete = m.set.Versions()
	}
	if v := m.set.Version(m.cfg.Cluster); v != nil {
		complete[m.cfg.Cluster] = v
	}
	resp.Complete = &hubpb.VersionVector{Versions: complete}
	return resp
}

// fetchScope is the scope a fetch asks for: absent is every service.
func fetchScope(l *hubpb.ImportList) *registry.Scope {
	if l == nil {
		return nil
	}
	return registry.NewScope(append([]string{}, l.GetHosts()...))
}

// fetchImports is the import list of our fetches; nil for every service.
func (m *Member) fetchImports() *hubpb.ImportList {
	scope := m.Imports()
	if scope.All() {
		return nil
	}
	return &hubpb.ImportList{Hosts: scope.List()}
}

// addImportStatus says, in our own cluster's status, what we import and
// from whom.
func (m *Member) addImportStatus(st *hubpb.StatusResponse) {
	for _, cs := range st.GetClusters() {
		if cs.GetName() == m.cfg.Cluster {
			gossip.SetImports(cs, m.Imports(), m.set)
		}
	}
}

func encodeScope(s *registry.Scope) []byte {
	if s.All() {
		return []byte(registry.ImportAll)
	}
	return []byte(strings.Join(append([]string{"scoped"}, s.Hosts()...), "\n"))
}

func decodeScope(data []byte) *registry.Scope {
	hosts, ok := strings.CutPrefix(string(data), "scoped")
	if !ok {
		return nil
	}
	return registry.NewScope(append([]string{}, strings.Fields(hosts)...))
}
