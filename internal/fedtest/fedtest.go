// Package fedtest runs real federations in tests: a hub, members and
// control planes on loopback with real gRPC, mTLS, gossip and bbolt, and
// the helpers every test shares (polling, free addresses, leak checks).
package fedtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/testport"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/grpc"
)

// Mesh runs a real hub and real members on loopback, each with its own
// bbolt file, gossip and mTLS.
type Mesh struct {
	t      testing.TB
	Dir    string
	timers gossip.Timers
	log    *slog.Logger

	Hub       *hub.Server
	HubAddr   string
	HubGossip string // pinned, so that members find a restarted hub
	hubStop   func()
	// ConfigureHub, if set, adjusts the hub's Config before each start.
	ConfigureHub func(*hub.Config)

	mu      sync.Mutex
	members map[string]*Member
}

type Member struct {
	Name   string
	Dir    string
	Member *member.Member
	Store  *store.Store
	stop   func()
}

func NewMesh(t testing.TB, timers gossip.Timers) *Mesh {
	t.Helper()
	return NewMeshWith(t, timers, nil)
}

// newMesh is a mesh with no hub and no member yet; FEDERATE_TEST_DEBUG
// turns on its debug logs.
func newMesh(t testing.TB, timers gossip.Timers) *Mesh {
	level := slog.LevelWarn
	if os.Getenv("FEDERATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return &Mesh{
		t: t, Dir: t.TempDir(), timers: timers,
		log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		members: make(map[string]*Member),
	}
}

// NewMeshWith is NewMesh with a hook to adjust the hub's Config.
func NewMeshWith(t testing.TB, timers gossip.Timers, configure func(*hub.Config)) *Mesh {
	t.Helper()
	tm := newMesh(t, timers)
	tm.ConfigureHub = configure
	t.Cleanup(func() {
		tm.mu.Lock()
		ms := make([]*Member, 0, len(tm.members))
		for _, m := range tm.members {
			ms = append(ms, m)
		}
		tm.mu.Unlock()
		for _, m := range ms {
			if m.stop != nil {
				m.stop()
			}
		}
		if tm.hubStop != nil {
			tm.hubStop()
		}
	})
	tm.StartHub()
	return tm
}

func (tm *Mesh) StartHub() {
	tm.t.Helper()
	if tm.HubAddr == "" {
		tm.HubAddr = testport.Addr(tm.t)
	}
	listen := tm.HubAddr
	if tm.HubGossip == "" {
		tm.HubGossip = testport.Addr(tm.t)
	}
	cfg := hub.Config{
		Mesh: "shop", Listen: listen, GossipBind: tm.HubGossip, DataDir: filepath.Join(tm.Dir, "hub"),
		GossipProfile: "lan", Timers: tm.timers, Logger: tm.log.With("node", "hub"),
	}
	if tm.ConfigureHub != nil {
		tm.ConfigureHub(&cfg)
	}
	srv, err := hub.New(cfg)
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.Hub = srv
	tm.hubStop = Start(tm.t, srv.Run, srv.Ready())
	tm.HubAddr = srv.Addr()
}

func (tm *Mesh) StopHub() {
	tm.hubStop()
	tm.hubStop = nil
}

// Start runs f until the returned stop is called; it fails the test
// if f does not become ready or returns an error.
func Start(tb testing.TB, run func(context.Context) error, ready <-chan struct{}) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		tb.Fatalf("component failed to start: %v", err)
	case <-timeout.C:
		cancel()
		tb.Fatal("component did not become ready within 30s")
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			t := time.NewTimer(30 * time.Second)
			defer t.Stop()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("component stopped with error: %v", err)
				}
			case <-t.C:
				tb.Error("component did not stop within 30s")
			}
		})
	}
}

func (tm *Mesh) AdminConn() *grpc.ClientConn {
	tm.t.Helper()
	conn, err := membership.Dial(tm.HubAddr, filepath.Join(tm.Dir, "hub", hub.AdminCredFile), filepath.Join(tm.Dir, "hub", membership.CAFile))
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.t.Cleanup(func() { conn.Close() })
	return conn
}

func (tm *Mesh) AdminClient() hubpb.HubClient { return hubpb.NewHubClient(tm.AdminConn()) }

func (tm *Mesh) AdminRegistry() hubpb.RegistryClient {
	return hubpb.NewRegistryClient(tm.AdminConn())
}

func (tm *Mesh) Token(cluster string, ttl time.Duration) string {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := tm.AdminClient().CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: cluster, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		tm.t.Fatal(err)
	}
	return resp.GetToken()
}

// join admits a cluster and saves its membership, without starting it.
func (tm *Mesh) Join(name string) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := membership.Join(ctx, tm.Token(name, time.Hour))
	if err != nil {
		tm.t.Fatal(err)
	}
	if err := ms.Save(filepath.Join(tm.Dir, name)); err != nil {
		tm.t.Fatal(err)
	}
}

// AddCluster joins and starts a member.
func (tm *Mesh) AddCluster(name string) *Member {
	tm.t.Helper()
	tm.Join(name)
	return tm.StartMember(name)
}

func (tm *Mesh) StartMember(name string) *Member {
	tm.t.Helper()
	return tm.StartMemberWith(name, nil)
}

// StartMemberWith is StartMember with a hook to adjust the member's config.
func (tm *Mesh) StartMemberWith(name string, configure func(*member.Config)) *Member {
	tm.t.Helper()
	dir := filepath.Join(tm.Dir, name)
	ms, err := membership.LoadMembership(dir)
	if err != nil {
		tm.t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "controlplane.db"))
	if err != nil {
		tm.t.Fatal(err)
	}
	seeds := append([]string(nil), ms.GossipSeeds...)
	tm.mu.Lock()
	for _, other := range tm.members {
		if other.Member != nil && other.stop != nil {
			seeds = append(seeds, other.Member.GossipSeed())
		}
	}
	tm.mu.Unlock()
	cfg := member.Config{
		Mesh: ms.Mesh, Cluster: name, Hub: ms.Hub, CA: ms.CA, Credential: ms.Credential, Store: st,
		CredentialPath: filepath.Join(dir, membership.CredentialFile),
		Gossip:         gossip.Config{Bind: "127.0.0.1:0", Seeds: seeds, Label: ms.Mesh, Profile: "lan", RejoinInterval: time.Second, Logger: tm.log.With("node", name)},
		Timers:         tm.timers, Logger: tm.log.With("node", name),
	}
	if configure != nil {
		configure(&cfg)
	}
	m, err := member.New(cfg)
	if err != nil {
		st.Close()
		tm.t.Fatal(err)
	}
	stop := Start(tm.t, m.Run, m.Ready())
	tmem := &Member{Name: name, Dir: dir, Member: m, Store: st}
	tmem.stop = func() {
		stop()
		st.Close()
	}
	tm.mu.Lock()
	tm.members[name] = tmem
	tm.mu.Unlock()
	return tmem
}

func (tm *Mesh) StopMember(name string) {
	tm.mu.Lock()
	m := tm.members[name]
	tm.mu.Unlock()
	m.stop()
	m.stop = nil
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// CoffeeService is a small exported service of one cluster.
func CoffeeService(cluster, name string, endpoints int, port uint32) *registry.Service {
	s := &registry.Service{
		Hostname: name + ".shop.svc.cluster.local", Namespace: "shop", Name: name,
		Ports: []*registry.Port{{Name: "http", Number: 8080, Protocol: "HTTP"}},
	}
	for i := range endpoints {
		s.Endpoints = append(s.Endpoints, &registry.Endpoint{
			Address: fmt.Sprintf("10.%d.0.%d", len(cluster), i+1), Ports: map[string]uint32{"http": port},
			Network: "net-" + cluster, Health: registrypb.Health_HEALTHY,
			SpiffeId: "spiffe://" + cluster + ".shop/ns/shop/sa/" + name,
		})
	}
	return s
}

func ClusterInfo(cluster string) *registry.ClusterInfo {
	return &registry.ClusterInfo{Network: "net-" + cluster, Locality: &registry.Locality{Region: "region-" + cluster}, TrustDomain: cluster + ".shop"}
}

func (m *Member) Update(t testing.TB, services ...*registry.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Member.Update(ctx, ClusterInfo(m.Name), services); err != nil {
		t.Fatal(err)
	}
}

// Member returns a started member by cluster name, or nil.
func (tm *Mesh) Member(name string) *Member {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.members[name]
}

// Logger is the log of the mesh's components: warnings, or everything
// with FEDERATE_TEST_DEBUG set.
func (tm *Mesh) Logger() *slog.Logger { return tm.log }

// Seeds are the gossip seeds of every running member, for a control plane
// that must find its peers while the hub is down.
func (tm *Mesh) Seeds() []string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	var seeds []string
	for _, other := range tm.members {
		if other.Member != nil && other.stop != nil {
			seeds = append(seeds, other.Member.GossipSeed())
		}
	}
	return seeds
}

// ControlPlane is a control plane the mesh started with controlplane.New.
type ControlPlane struct {
	*controlplane.ControlPlane
	Dir  string
	Stop func()
}

// StartControlPlane starts the real control plane assembly for a joined
// cluster (see Join), in its directory under the mesh's; cfg's Cluster,
// DataDir, logger, timers and gossip settings are filled in.
func (tm *Mesh) StartControlPlane(name string, cfg controlplane.Config) *ControlPlane {
	tm.t.Helper()
	cfg.Cluster, cfg.DataDir = name, filepath.Join(tm.Dir, name)
	if cfg.Network == "" {
		cfg.Network = "net-" + name
	}
	if cfg.Logger == nil {
		cfg.Logger = tm.log.With("node", name)
	}
	if cfg.Timers == (gossip.Timers{}) {
		cfg.Timers = tm.timers
	}
	cfg.GossipProfile, cfg.GossipRejoin = "lan", time.Second
	cfg.GossipSeeds = append(cfg.GossipSeeds, tm.Seeds()...)
	cp, err := controlplane.New(cfg)
	if err != nil {
		tm.t.Fatal(err)
	}
	stop := Start(tm.t, cp.Run, cp.Ready())
	tm.t.Cleanup(stop)
	tm.mu.Lock()
	tm.members[name] = &Member{Name: name, Dir: cfg.DataDir, Member: cp.Member(), stop: stop}
	tm.mu.Unlock()
	return &ControlPlane{ControlPlane: cp, Dir: cfg.DataDir, Stop: stop}
}

// Source is a control plane's source of services that a test sets.
type Source struct{ ch chan []*registry.Service }

// NewSource returns a source that publishes services at once.
func NewSource(services ...*registry.Service) *Source {
	s := &Source{ch: make(chan []*registry.Service, 1)}
	s.ch <- services
	return s
}

// Set replaces the services the source publishes.
func (s *Source) Set(services ...*registry.Service) {
	select {
	case <-s.ch:
	default:
	}
	s.ch <- services
}

// Run implements controlplane.Source.
func (s *Source) Run(ctx context.Context, publish func([]*registry.Service)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case svcs := <-s.ch:
			publish(svcs)
		}
	}
}

// Main runs a package's tests, then fails them if goroutines of this
// module are still running: every component must stop what it started.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(10 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines still running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to timeout for goroutines running this
// module's code to stop, and returns the stacks of those that do not.
func leakedGoroutines(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/federate/federate/") && !strings.Contains(g, "fedtest.Main") && !strings.Contains(g, "testing.tRunner") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
