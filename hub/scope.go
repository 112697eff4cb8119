package hub

import (
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/grpc"
)

// requestScope is the scope a subscriber or a fetch asks for: absent is
// every service, as older members ask; a present, empty list is none.
func requestScope(l *hubpb.ImportList) *registry.Scope {
	if l == nil {
		return nil
	}
	return registry.NewScope(append([]string{}, l.GetHosts()...))
}

// importsBeyond keeps the new imports a subscriber named that are in its
// scope: those it gets whole.
func importsBeyond(scope *registry.Scope, added []string) []string {
	var out []string
	for _, h := range added {
		if h != registry.InfoKey && scope.Includes(h) {
			out = append(out, h)
		}
	}
	return out
}

// scoped is the update of one cluster's records for a subscriber that
// imports scope only: the records it imports, and, when some were left
// out, the slice's version, so that the subscriber's version of the slice
// keeps up with gossip's and it does not fetch what it left out; all,
// shared by every subscriber, when it leaves nothing out.
func (s *Server) scoped(scope *registry.Scope, cluster string, recs []registry.Verified, all *hubpb.SubscribeResponse) *hubpb.SubscribeResponse {
	u := &hubpb.SubscribeResponse{}
	var newest *registry.Version
	for _, v := range recs {
		if registry.Compare(v.Record.GetVersion(), newest) > 0 {
			newest = v.Record.GetVersion()
		}
		if scope.Includes(v.Record.GetKey()) {
			u.Records = append(u.Records, v.Signed)
		}
	}
	if len(u.Records) == len(recs) {
		return all // nothing left out: the update every subscriber shares
	}
	u.SliceVersions = &hubpb.VersionVector{Versions: map[string]*registrypb.Version{cluster: newest}}
	return u
}

// sendScoped sends a subscriber's own update in batches, the slice
// versions with the last.
func sendScoped(stream grpc.ServerStreamingServer[hubpb.SubscribeResponse], u *hubpb.SubscribeResponse) error {
	return membership.SendBatches(u.GetRecords(), func(b []*registrypb.SignedRecord, last bool) error {
		resp := &hubpb.SubscribeResponse{Records: b}
		if last {
			resp.SliceVersions = u.GetSliceVersions()
		}
		return stream.Send(resp)
	})
}

// sliceVersions is every slice's version but own's, for a scoped
// subscriber's catch-up.
func (s *Server) sliceVersions(own string) *hubpb.VersionVector {
	vs := s.set.Versions()
	delete(vs, own)
	return &hubpb.VersionVector{Versions: vs}
}

// addImportStatus says, for each cluster subscribed to this hub, what it
// imports and from whom.
func (s *Server) addImportStatus(resp *hubpb.StatusResponse) {
	scopes := make(map[string]*registry.Scope)
	s.subMu.Lock()
	for sub := range s.subs {
		if sub.cluster != "" {
			scopes[sub.cluster] = sub.scope
		}
	}
	s.subMu.Unlock()
	for _, cs := range resp.GetClusters() {
		if scope, ok := scopes[cs.GetName()]; ok {
			gossip.SetImports(cs, scope, s.set)
		}
	}
}
