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
	"google.golang.org/grpc"
)

// Server serves gateway snapshots, and the clients' snapshot, over ADS. A NACK is logged and never
// answered with the same resources again: the rejected version stays
// rejected until the next snapshot.
type Server struct {
	log   *slog.Logger
	cache cachev3.SnapshotCache
	ads   serverv3.Server

	mu     sync.Mutex       // guards nodes
	nodes  map[int64]string // stream -> node ID
	nacked map[string]int   // node -> NACKs since its last snapshot, for tests and status
}

// NewServer returns an ADS server; ctx bounds its background work.
func NewServer(ctx context.Context, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		log:    log.With("component", "xds"),
		cache:  cachev3.NewSnapshotCache(true, nodeGroups{}, nil),
		nodes:  make(map[int64]string),
		nacked: make(map[string]int),
	}
	s.ads = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: s.onRequest,
		StreamClosedFunc: func(id int64, _ *corepb.Node) {
			s.mu.Lock()
			delete(s.nodes, id)
			s.mu.Unlock()
		},
	})
	return s
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
