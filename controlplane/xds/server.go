package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Server serves gateway snapshots, and the clients' snapshot, over ADS. A NACK is logged and never
// answered with the same resources again: the rejected version stays
// rejected until the next snapshot.
type Server struct {
	log       *slog.Logger
	cache     cachev3.SnapshotCache
	ads       serverv3.Server
	authorize Authorizer

	mu     sync.Mutex            // guards the fields below
	nodes  map[int64]string      // stream -> node ID
	peers  map[int64]spiffeid.ID // stream -> caller, when authorize is set
	nacked map[string]int        // node -> NACKs since its last snapshot, for tests and status
}

// Authorizer decides whether a caller with a verified SPIFFE ID may get
// the configuration of a node ID.
type Authorizer func(caller spiffeid.ID, node string) error

// Option configures a Server.
type Option func(*Server)

// WithAuthorizer makes every stream present a client certificate, checked
// before anything is sent, and its node IDs pass authorize.
func WithAuthorizer(authorize Authorizer) Option {
	return func(s *Server) { s.authorize = authorize }
}

// NewServer returns an ADS server; ctx bounds its background work.
func NewServer(ctx context.Context, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		log: log.With("component", "xds"),
		// Not in ADS mode, which answers only requests that name every
		// resource of a type: a grpc-go channel names the one listener
		// it dials.
		cache:  cachev3.NewSnapshotCache(false, nodeGroups{}, nil),
		nodes:  make(map[int64]string),
		peers:  make(map[int64]spiffeid.ID),
		nacked: make(map[string]int),
	}
	for _, o := range opts {
		o(s)
	}
	s.ads = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:    s.onOpen,
		StreamRequestFunc: s.onRequest,
		StreamClosedFunc: func(id int64, _ *corepb.Node) {
			s.mu.Lock()
			delete(s.nodes, id)
			delete(s.peers, id)
			s.mu.Unlock()
		},
	})
	return s
}

// onOpen refuses a stream without a verified client certificate, before
// it is sent anything.
func (s *Server) onOpen(ctx context.Context, stream int64, _ string) error {
	if s.authorize == nil {
		return nil
	}
	id, err := trust.PeerID(ctx)
	if err != nil {
		addr := ""
		if p, ok := peer.FromContext(ctx); ok {
			addr = p.Addr.String()
		}
		s.log.Warn("refused an xDS stream without a client certificate", "peer", addr)
		return status.Error(codes.Unauthenticated, "xds: a client certificate (an SVID of a federated trust domain) is required")
	}
	s.mu.Lock()
	s.peers[stream] = id
	s.mu.Unlock()
	return nil
}

// Register adds the aggregated discovery service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoverypb.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// The two node groups: every gateway of a cluster gets one snapshot, and
// every client of the cluster another.
const (
	group       = "eastwest-gateways"
	clientGroup = "clients"
)

// ClientNodePrefix starts the node ID of a client (Istio's node type for
// sidecars and proxyless gRPC); any other node is a gateway.
const ClientNodePrefix = "sidecar~"

// nodeGroups sorts nodes into the two groups.
type nodeGroups struct{}

func (nodeGroups) ID(n *corepb.Node) string { return groupOf(n.GetId()) }

func groupOf(node string) string {
	if strings.HasPrefix(node, ClientNodePrefix) {
		return clientGroup
	}
	return group
}

// Update replaces the gateways' snapshot; it must have come from Build.
func (s *Server) Update(ctx context.Context, snap *cachev3.Snapshot) error {
	return s.set(ctx, group, snap)
}

// UpdateClients replaces the clients' snapshot; it must have come from
// BuildClients.
func (s *Server) UpdateClients(ctx context.Context, snap *cachev3.Snapshot) error {
	return s.set(ctx, clientGroup, snap)
}

func (s *Server) set(ctx context.Context, group string, snap *cachev3.Snapshot) error {
	if err := s.cache.SetSnapshot(ctx, group, snap); err != nil {
		return fmt.Errorf("xds: set snapshot: %w", err)
	}
	s.mu.Lock()
	maps.DeleteFunc(s.nacked, func(node string, _ int) bool { return groupOf(node) == group })
	s.mu.Unlock()
	return nil
}

// NACKs returns how many NACKs a node sent since its last snapshot.
func (s *Server) NACKs(node string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nacked[node]
}

// onRequest logs a NACK and marks the rejected version as seen, so that
// the cache waits for a new snapshot instead of resending the same one
// forever (go-control-plane answers a NACK, which carries the last
// accepted version, as if the client were behind).
func (s *Server) onRequest(stream int64, req *discoverypb.DiscoveryRequest) error {
	s.mu.Lock()
	node := req.GetNode().GetId()
	if node != "" && node != s.nodes[stream] && s.authorize != nil {
		caller := s.peers[stream]
		if err := s.authorize(caller, node); err != nil {
			s.mu.Unlock()
			s.log.Warn("refused an xDS stream", "caller", caller, "node", node, "err", err)
			return status.Error(codes.PermissionDenied, err.Error())
		}
	}
	if node != "" {
		s.nodes[stream] = node
	} else {
		node = s.nodes[stream]
	}
	if req.GetErrorDetail() == nil {
		s.mu.Unlock()
		return nil
	}
	s.nacked[node]++
	s.mu.Unlock()
	snap, err := s.cache.GetSnapshot(groupOf(node))
	rejected := ""
	if err == nil {
		rejected = snap.GetVersion(req.GetTypeUrl())
		req.VersionInfo = rejected
	}
	s.log.Warn("xDS configuration rejected; it will not be resent until it changes",
		"node", node, "type", req.GetTypeUrl(), "version", rejected, "error", req.GetErrorDetail().GetMessage())
	return nil
}
