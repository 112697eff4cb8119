package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// Server serves gateway snapshots, and the clients' snapshots (one per
// namespace, after exportTo), over ADS, both state of the world and
// incremental (delta). A NACK is logged and never answered with the same
// resources again: the rejected version stays rejected until the next
// snapshot.
type Server struct {
	log       *slog.Logger
	cache     *groupCache
	ads       serverv3.Server
	authorize Authorizer

	// pushMu serializes the clients' pushes with the first snapshot of a
	// namespace that connects, so a namespace never gets an older view
	// after a newer one.
	pushMu     sync.Mutex
	clients    ClientSnapshots // the latest; nil before the first
	namespaces map[string]bool // client namespaces with a snapshot

	mu      sync.Mutex            // guards the fields below
	streams map[streamKey]*stream // open streams
	nacked  map[string]nacks      // by node ID, since its group's last snapshot
}

// Authorizer decides whether a caller with a verified SPIFFE ID may get
// the configuration of a node ID.
type Authorizer func(caller spiffeid.ID, node string) error

// Option configures a Server.
type Option func(*Server)

// WithAuthorizer makes every stream present a client certificate, checked
// before anything is sent, and its node IDs pass authorize. A client
// node's namespace is then its SVID's.
func WithAuthorizer(authorize Authorizer) Option {
	return func(s *Server) { s.authorize = authorize }
}

// ClientSnapshots renders the clients' snapshot for the clients of one
// namespace ("" for a client whose namespace is unknown).
type ClientSnapshots interface {
	For(namespace string) (*cachev3.Snapshot, error)
}

// NewServer returns an ADS server; ctx bounds its background work.
func NewServer(ctx context.Context, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		log: log.With("component", "xds"),
		// One linear cache per group and type: a request may name any
		// subset (a grpc-go channel names the one listener it dials), and
		// state-of-the-world and delta streams are served from the same
		// per-resource versions.
		cache:      newGroupCache(log.With("component", "xds")),
		namespaces: make(map[string]bool),
		streams:    make(map[streamKey]*stream),
		nacked:     make(map[string]nacks),
	}
	for _, o := range opts {
		o(s)
	}
	s.ads = serverv3.NewServer(ctx, s.cache, s.callbacks())
	return s
}

// Register adds the aggregated discovery service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoverypb.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// Update replaces the gateways' snapshot; it must have come from Build.
func (s *Server) Update(ctx context.Context, snap *cachev3.Snapshot) error {
	return s.set(ctx, group, snap)
}

// UpdateClients gives every client namespace the same snapshot, which must
// have come from BuildClients.
func (s *Server) UpdateClients(ctx context.Context, snap *cachev3.Snapshot) error {
	return s.UpdateClientViews(ctx, sameForAll{snap})
}

type sameForAll struct{ snap *cachev3.Snapshot }

func (a sameForAll) For(string) (*cachev3.Snapshot, error) { return a.snap, nil }

// UpdateClientViews replaces the clients' snapshots: every namespace
// with clients gets views.For(namespace) now, and a namespace that
// connects later gets it before its first answer.
func (s *Server) UpdateClientViews(ctx context.Context, views ClientSnapshots) error {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	s.clients = views
	var errs []error
	for _, ns := range slices.Sorted(maps.Keys(s.namespaces)) {
		if err := s.pushNamespaceLocked(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("xds: clients' snapshots: %w", errs[0])
	}
	return nil
}

// ensureNamespace gives a namespace whose first client connects its
// snapshot, if there is one yet.
func (s *Server) ensureNamespace(ctx context.Context, ns string) error {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if s.namespaces[ns] {
		return nil
	}
	s.namespaces[ns] = true
	return s.pushNamespaceLocked(ctx, ns)
}

func (s *Server) pushNamespaceLocked(ctx context.Context, ns string) error {
	if s.clients == nil {
		return nil
	}
	snap, err := s.clients.For(ns)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	return s.set(ctx, clientGroup(ns), snap)
}

func (s *Server) set(ctx context.Context, group string, snap *cachev3.Snapshot) error {
	changed, err := s.cache.set(group, snap)
	if err != nil {
		return fmt.Errorf("xds: set snapshot: %w", err)
	}
	if !changed {
		return nil // what was rejected is still what is served
	}
	s.mu.Lock()
	maps.DeleteFunc(s.nacked, func(_ string, n nacks) bool { return n.group == group })
	s.mu.Unlock()
	return nil
}

// NACKs returns how many NACKs a node sent since its last snapshot.
func (s *Server) NACKs(node string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nacked[node].count
}

// nacks counts a node's NACKs of its group's snapshot.
type nacks struct {
	group string
	count int
}
