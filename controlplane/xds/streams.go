package xds

import (
	"context"
	"fmt"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/federate/federate/trust"
)

// streamKey names a stream: the state-of-the-world and the delta servers
// number their streams independently.
type streamKey struct {
	delta bool
	id    int64
}

// stream is what the server knows of an open stream.
type stream struct {
	caller spiffeid.ID  // verified, when the server authorizes
	sent   *corepb.Node // the node the client sent, as authorized
	node   *corepb.Node // the node the cache sees: a client's carries its namespace
}

// callbacks check every stream, state of the world and delta alike,
// before the cache sees its first request.
func (s *Server) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return s.open(ctx, streamKey{id: id})
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return s.open(ctx, streamKey{delta: true, id: id})
		},
		StreamClosedFunc:       func(id int64, _ *corepb.Node) { s.close(streamKey{id: id}) },
		DeltaStreamClosedFunc:  func(id int64, _ *corepb.Node) { s.close(streamKey{delta: true, id: id}) },
		StreamRequestFunc:      s.onRequest,
		StreamDeltaRequestFunc: s.onDeltaRequest,
	}
}

// open refuses a stream without a verified client certificate, before
// it is sent anything.
func (s *Server) open(ctx context.Context, key streamKey) error {
	st := &stream{}
	if s.authorize != nil {
		id, err := trust.PeerID(ctx)
		if err != nil {
			addr := ""
			if p, ok := peer.FromContext(ctx); ok {
				addr = p.Addr.String()
			}
			s.log.Warn("refused an xDS stream without a client certificate", "peer", addr, "delta", key.delta)
			return status.Error(codes.Unauthenticated, "xds: a client certificate (an SVID of a federated trust domain) is required")
		}
		st.caller = id
	}
	s.mu.Lock()
	s.streams[key] = st
	s.mu.Unlock()
	return nil
}

func (s *Server) close(key streamKey) {
	s.mu.Lock()
	delete(s.streams, key)
	s.mu.Unlock()
}

// admit returns the node the cache is to see for a request that sent
// node (nil: the stream's node so far). A stream's first node, and any
// other it changes to, must pass the authorizer, and a client node's
// namespace must agree with its caller's.
func (s *Server) admit(key streamKey, sent *corepb.Node) (*corepb.Node, error) {
	s.mu.Lock()
	st := s.streams[key]
	if st == nil {
		s.mu.Unlock()
		return nil, status.Error(codes.Internal, "xds: a request on a stream that was never opened")
	}
	if st.node != nil && (sent == nil || sent == st.sent || proto.Equal(sent, st.sent)) {
		node := st.node
		s.mu.Unlock()
		return node, nil
	}
	caller := st.caller
	s.mu.Unlock()
	if sent == nil {
		sent = &corepb.Node{}
	}
	id := sent.GetId()
	if s.authorize != nil {
		if err := s.authorize(caller, id); err != nil {
			s.log.Warn("refused an xDS stream", "caller", caller, "node", id, "delta", key.delta, "err", err)
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
	}
	node := sent
	if IsClientNode(id) {
		ns, err := s.clientNamespace(caller, id)
		if err != nil {
			s.log.Warn("refused an xDS stream", "caller", caller, "node", id, "delta", key.delta, "err", err)
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		node = withNamespace(sent, ns)
		// The namespace's snapshot exists before the cache looks, so the
		// first answer comes at once.
		if err := s.ensureNamespace(context.Background(), ns); err != nil {
			s.log.Error("no snapshot for a namespace's first client; it waits for the next change", "namespace", ns, "err", err)
		}
	}
	s.mu.Lock()
	st.sent, st.node = sent, node
	s.mu.Unlock()
	return node, nil
}

// clientNamespace is the namespace whose view a client node gets: its
// SVID's when the server authorizes (the node ID, if it names one, must
// agree), else the one its node ID names.
func (s *Server) clientNamespace(caller spiffeid.ID, node string) (string, error) {
	named, err := NodeNamespace(node)
	if err != nil || s.authorize == nil {
		return named, err
	}
	own := trust.NamespaceOf(caller)
	if own == "" {
		return "", fmt.Errorf("xds: %s is not a workload: client node %q needs a workload SVID (/ns/<namespace>/sa/<account>)", caller, node)
	}
	if named != "" && named != own {
		return "", fmt.Errorf("xds: node %q is in namespace %q, but the caller %s is in namespace %q: use the namespace of the SVID in the node ID", node, named, caller, own)
	}
	return own, nil
}

// onRequest admits the request's node, then logs a NACK and marks the
// rejected version as seen, so that the cache waits for a new snapshot
// instead of resending the same one forever (go-control-plane answers a
// NACK, which carries the last accepted version, as if the client were
// behind).
func (s *Server) onRequest(id int64, req *discoverypb.DiscoveryRequest) error {
	node, err := s.admit(streamKey{id: id}, req.GetNode())
	if err != nil {
		return err
	}
	req.Node = node
	if req.GetErrorDetail() == nil {
		return nil
	}
	grp := nodeGroups{}.ID(node)
	s.countNACK(node.GetId(), grp)
	rejected := s.cache.version(grp, req.GetTypeUrl())
	if rejected != "" {
		req.VersionInfo = rejected
	}
	s.log.Warn("xDS configuration rejected; it will not be resent until it changes",
		"node", node.GetId(), "type", req.GetTypeUrl(), "version", rejected, "error", req.GetErrorDetail().GetMessage())
	return nil
}

// onDeltaRequest admits the request's node and logs a NACK. A delta
// stream is sent a resource again only when its content changes, so a
// rejected resource is never resent as it is.
func (s *Server) onDeltaRequest(id int64, req *discoverypb.DeltaDiscoveryRequest) error {
	node, err := s.admit(streamKey{delta: true, id: id}, req.GetNode())
	if err != nil {
		return err
	}
	req.Node = node
	if req.GetErrorDetail() == nil {
		return nil
	}
	s.countNACK(node.GetId(), nodeGroups{}.ID(node))
	s.log.Warn("xDS configuration rejected (delta); it will not be resent until it changes",
		"node", node.GetId(), "type", req.GetTypeUrl(), "error", req.GetErrorDetail().GetMessage())
	return nil
}

func (s *Server) countNACK(node, group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nacked[node]
	if n.group != group {
		n = nacks{group: group}
	}
	n.count++
	s.nacked[node] = n
}
