package hub

import (
	"context"
	"errors"
	"maps"
	"sync"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type subscriber struct {
	cluster string
	scope   *registry.Scope // what the cluster imports; nil: everything
	ch      chan *hubpb.SubscribeResponse
	done    chan struct{} // closed by end
	once    sync.Once
	err     error // why the stream ends; set before done is closed
}

// end ends the stream with err; it reports whether this call ended it.
func (sub *subscriber) end(err error) bool {
	ended := false
	sub.once.Do(func() {
		sub.err, ended = err, true
		close(sub.done)
	})
	return ended
}

// Publish stores and relays records of the caller's own cluster.
func (s *Server) Publish(ctx context.Context, req *hubpb.PublishRequest) (*hubpb.PublishResponse, error) {
	c, err := s.identify(ctx)
	if err != nil {
		return nil, err
	}
	if c.Cluster == "" {
		return nil, status.Error(codes.PermissionDenied, "only clusters publish slices")
	}
	recs, err := s.verifyPublish(c.Cluster, req.GetRecords())
	if err != nil {
		s.log.Warn("publish refused", "cluster", c.Cluster, "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, r := range recs {
		if r.Record.GetCluster() != c.Cluster {
			s.log.Warn("publish refused: record of another cluster", "caller", c.Cluster, "record_cluster", r.Record.GetCluster(), "key", r.Record.GetKey())
			return nil, status.Errorf(codes.PermissionDenied, "cluster %q may publish only its own slice; the request carries a record of %q, so nothing was stored", c.Cluster, r.Record.GetCluster())
		}
	}
	changed, err := s.commit(ctx, recs)
	var refused *refusedError
	if errors.As(err, &refused) {
		s.log.Warn("publish refused", "cluster", c.Cluster, "err", refused.err)
		return nil, status.Errorf(codes.InvalidArgument, "%v; nothing was stored", refused.err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store records: %v", err)
	}
	s.fanout(c.Cluster, changed)
	return &hubpb.PublishResponse{Version: s.set.Version(c.Cluster)}, nil
}

// refusedError is a publish refused for its content, not for a failure.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }

// commit persists the records that are newer than what the hub holds, then
// applies them. Nothing is applied that is not on disk. recs are of one
// cluster: its lock orders its publishes, while other clusters' publishes
// are stored at the same time.
func (s *Server) commit(ctx context.Context, recs []registry.Verified) ([]registry.Verified, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	unlock, err := s.clusterMu.lock(ctx, recs[0].Record.GetCluster())
	if err != nil {
		return nil, err
	}
	defer unlock()
	fresh := s.set.Newer(recs)
	if len(fresh) == 0 {
		return nil, nil
	}
	if err := registry.CheckBundles(s.bundles, s.set, fresh); err != nil {
		return nil, &refusedError{err}
	}
	fresh, err = s.storeRecords(ctx, fresh)
	if err != nil {
		return nil, err
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	registry.ApplyBundles(s.bundles, s.set, fresh, s.log)
	return s.set.Apply(fresh), nil
}

// storeRecords persists records and returns those it stored. On etcd a
// record is stored only over an older version of its key: another replica
// may hold a newer one this replica has yet to see, which its watch then
// brings.
func (s *Server) storeRecords(ctx context.Context, recs []registry.Verified) ([]registry.Verified, error) {
	eb, replicated := s.backend.(*etcdBackend)
	if !replicated {
		return recs, s.write(ctx, store.RecordOps(s.set, recs)...)
	}
	stored, err := eb.putRecords(ctx, recs, func(cluster string) uint64 { return s.set.Version(cluster).GetIncarnation() })
	s.noteWrite(err)
	if err != nil {
		return nil, err
	}
	if lost := len(recs) - len(stored); lost > 0 {
		s.log.Debug("records not stored: etcd holds them newer", "cluster", recs[0].Record.GetCluster(), "records", lost)
	}
	return stored, nil
}

// fanout relays one cluster's records to every other subscriber, each
// the records it imports (scope.go); the owner's own stream is skipped.
func (s *Server) fanout(cluster string, recs []registry.Verified) {
	if len(recs) == 0 {
		return
	}
	signed := make([]*registrypb.SignedRecord, len(recs))
	for i, v := range recs {
		signed[i] = v.Signed
	}
	all := &hubpb.SubscribeResponse{Records: signed}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for sub := range s.subs {
		if sub.cluster == cluster {
			continue
		}
		u := all
		if !sub.scope.All() {
			u = s.scoped(sub.scope, cluster, recs, all)
		}
		s.queue(sub, u)
	}
}

// broadcast queues an update for every subscriber but the one of cluster
// skip; a subscriber whose queue is full is cut off and resumes later.
func (s *Server) broadcast(u *hubpb.SubscribeResponse, skip string) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for sub := range s.subs {
		if skip != "" && sub.cluster == skip {
			continue
		}
		s.queue(sub, u)
	}
}

// queue queues u for sub, or cuts sub off when its queue is full; the
// caller holds subMu.
func (s *Server) queue(sub *subscriber, u *hubpb.SubscribeResponse) {
	select {
	case sub.ch <- u:
	default:
		sub.end(status.Error(codes.ResourceExhausted, "subscriber fell too far behind; reconnect to resume from your versions"))
	}
}

// Subscribe streams everything newer than the caller's versions, then every
// change as it is committed.
func (s *Server) Subscribe(req *hubpb.SubscribeRequest, stream grpc.ServerStreamingServer[hubpb.SubscribeResponse]) error {
	c, err := s.identify(stream.Context())
	if err != nil {
		return err
	}
	scope := requestScope(req.GetImports())
	sub := &subscriber{cluster: c.Cluster, scope: scope, ch: make(chan *hubpb.SubscribeResponse, subscriberBuffer), done: make(chan struct{})}
	s.subMu.Lock()
	s.subs[sub] = struct{}{}
	s.subMu.Unlock()
	defer func() {
		s.subMu.Lock()
		delete(s.subs, sub)
		s.subMu.Unlock()
	}()
	// A removal between identify and the registration above did not see
	// this stream: check again now that it would.
	if _, err := s.identify(stream.Context()); err != nil {
		return err
	}
	// The backlog leaves out the caller's own slice, as fanout does.
	known := maps.Clone(req.GetKnown().GetVersions())
	if c.Cluster != "" {
		if known == nil {
			known = make(map[string]*registry.Version)
		}
		known[c.Cluster] = s.set.Version(c.Cluster)
	}
	backlog := s.set.SinceIn(known, scope, importsBeyond(scope, req.GetNewImports()))
	first := &hubpb.SubscribeResponse{Removals: s.removals(), ExternalBundles: s.externalBundles()}
	if err := membership.SendBatches(backlog, func(b []*registrypb.SignedRecord, last bool) error {
		resp := &hubpb.SubscribeResponse{Records: b, Synced: last}
		if last && c.Cluster != "" {
			resp.YourVersion = s.set.Version(c.Cluster)
		}
		if last && !scope.All() {
			resp.SliceVersions = s.sliceVersions(c.Cluster)
		}
		if last {
			resp.Hubs = s.knownHubs()
		}
		if first != nil {
			resp.Removals, resp.ExternalBundles, first = first.Removals, first.ExternalBundles, nil
		}
		return stream.Send(resp)
	}); err != nil {
		return err
	}
	s.log.Debug("subscriber synced", "caller", c.ID, "records", len(backlog), "imports", len(scope.Hosts()), "imports_all", scope.All())
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the hub is stopping; reconnect to resume from your versions")
		case <-sub.done:
			return sub.err
		case u := <-sub.ch:
			if len(u.GetRecords()) == 0 {
				if err := stream.Send(u); err != nil {
					return err
				}
				continue
			}
			// An update shared by the subscribers is encoded once for all;
			// a scoped one, with the slice version of what it left out, is
			// this subscriber's own.
			send := s.relayEnc.send
			if u.GetSliceVersions() != nil {
				send = sendScoped
			}
			if err := send(stream, u); err != nil {
				return err
			}
		}
	}
}

// Fetch returns every record the caller imports newer than its versions;
// the hub holds every slice whole, so the answer is complete for each.
func (s *Server) Fetch(ctx context.Context, req *hubpb.FetchRequest) (*hubpb.FetchResponse, error) {
	if _, err := s.identify(ctx); err != nil {
		return nil, err
	}
	return &hubpb.FetchResponse{
		Records:  s.set.SinceIn(req.GetKnown().GetVersions(), requestScope(req.GetImports()), nil),
		Complete: &hubpb.VersionVector{Versions: s.set.Versions()},
	}, nil
}

func (s *Server) identify(ctx context.Context) (membership.Caller, error) {
	return membership.Identify(ctx, s.td, s.verifier)
}

// Status reports every cluster as the hub sees it.
func (s *Server) Status(ctx context.Context, _ *hubpb.StatusRequest) (*hubpb.StatusResponse, error) {
	if _, err := s.identify(ctx); err != nil {
		return nil, err
	}
	resp := gossip.BuildStatus(s.cfg.Mesh, "", s.set, s.live, s.gossip.Members(), s.cfg.Now())
	s.addImportStatus(resp)
	st := s.storeStatus()
	resp.Store = &hubpb.StoreHealth{WriteFailures: st.failures}
	if st.lastErr != nil {
		resp.Store.Error, resp.Store.FailingSince = st.lastErr.Error(), st.since.Unix()
	}
	resp.External = s.externalStatus()
	return resp, nil
}
