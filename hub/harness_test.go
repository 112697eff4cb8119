package hub

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/grpc"
)

// testMesh runs a real hub and real members on loopback, each with its own
// bbolt file, gossip and mTLS.
type testMesh struct {
	t      testing.TB
	dir    string
	timers Timers
	log    *slog.Logger

	hub       *Server
	hubAddr   string
	hubGossip string // pinned, so that members find a restarted hub
	hubStop   func()
	// configureHub, if set, adjusts the hub's Config before each start.
	configureHub func(*Config)

	mu      sync.Mutex
	members map[string]*testMember
}

type testMember struct {
	name   string
	dir    string
	member *Member
	store  *store.Store
	stop   func()
}

func newTestMesh(t testing.TB, timers Timers) *testMesh {
	t.Helper()
	return newTestMeshWith(t, timers, nil)
}

// newTestMeshWith is newTestMesh with a hook to adjust the hub's Config.
func newTestMeshWith(t testing.TB, timers Timers, configureHub func(*Config)) *testMesh {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("FEDERATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	tm := &testMesh{
		t: t, dir: t.TempDir(), timers: timers,
		log:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		members:      make(map[string]*testMember),
		configureHub: configureHub,
	}
	t.Cleanup(func() {
		tm.mu.Lock()
		ms := make([]*testMember, 0, len(tm.members))
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
	tm.startHub()
	return tm
}

func (tm *testMesh) startHub() {
	tm.t.Helper()
	if tm.hubAddr == "" {
		tm.hubAddr = freeAddr(tm.t)
	}
	listen := tm.hubAddr
	if tm.hubGossip == "" {
		tm.hubGossip = freeAddr(tm.t)
	}
	cfg := Config{
		Mesh: "shop", Listen: listen, GossipBind: tm.hubGossip, DataDir: filepath.Join(tm.dir, "hub"),
		GossipProfile: "lan", Timers: tm.timers, Logger: tm.log.With("node", "hub"),
	}
	if tm.configureHub != nil {
		tm.configureHub(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.hub = srv
	tm.hubStop = runComponent(tm.t, srv.Run, srv.Ready())
	tm.hubAddr = srv.Addr()
}

func (tm *testMesh) stopHub() {
	tm.hubStop()
	tm.hubStop = nil
}

// runComponent runs f until the returned stop is called; it fails the test
// if f does not become ready or returns an error.
func runComponent(tb testing.TB, run func(context.Context) error, ready <-chan struct{}) (stop func()) {
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

func (tm *testMesh) adminConn() *grpc.ClientConn {
	tm.t.Helper()
	conn, err := Dial(tm.hubAddr, filepath.Join(tm.dir, "hub", AdminCredFile), filepath.Join(tm.dir, "hub", CAFile))
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.t.Cleanup(func() { conn.Close() })
	return conn
}

func (tm *testMesh) adminClient() hubpb.HubClient { return hubpb.NewHubClient(tm.adminConn()) }

func (tm *testMesh) adminRegistry() hubpb.RegistryClient {
	return hubpb.NewRegistryClient(tm.adminConn())
}

func (tm *testMesh) token(cluster string, ttl time.Duration) string {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := tm.adminClient().CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: cluster, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		tm.t.Fatal(err)
	}
	return resp.GetToken()
}

// join admits a cluster and saves its membership, without starting it.
func (tm *testMesh) join(name string) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := Join(ctx, tm.token(name, time.Hour))
	if err != nil {
		tm.t.Fatal(err)
	}
	if err := ms.Save(filepath.Join(tm.dir, name)); err != nil {
		tm.t.Fatal(err)
	}
}

// addCluster joins and starts a member.
func (tm *testMesh) addCluster(name string) *testMember {
	tm.t.Helper()
	tm.join(name)
	return tm.startMember(name)
}

func (tm *testMesh) startMember(name string) *testMember {
	tm.t.Helper()
	return tm.startMemberWith(name, nil)
}

// startMemberWith is startMember with a hook to adjust the member's config.
func (tm *testMesh) startMemberWith(name string, configure func(*MemberConfig)) *testMember {
	tm.t.Helper()
	dir := filepath.Join(tm.dir, name)
	ms, err := LoadMembership(dir)
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
		if other.member != nil && other.stop != nil {
			seeds = append(seeds, other.member.GossipSeed())
		}
	}
	tm.mu.Unlock()
	cfg := MemberConfig{
		Mesh: ms.Mesh, Cluster: name, Hub: ms.Hub, CA: ms.CA, Credential: ms.Credential, Store: st,
		CredentialPath: filepath.Join(dir, CredentialFile),
		Gossip:         GossipConfig{Bind: "127.0.0.1:0", Seeds: seeds, Label: ms.Mesh, Profile: "lan", RejoinInterval: time.Second, Logger: tm.log.With("node", name)},
		Timers:         tm.timers, Logger: tm.log.With("node", name),
	}
	if configure != nil {
		configure(&cfg)
	}
	m, err := NewMember(cfg)
	if err != nil {
		st.Close()
		tm.t.Fatal(err)
	}
	stop := runComponent(tm.t, m.Run, m.Ready())
	tmem := &testMember{name: name, dir: dir, member: m, store: st}
	tmem.stop = func() {
		stop()
		st.Close()
	}
	tm.mu.Lock()
	tm.members[name] = tmem
	tm.mu.Unlock()
	return tmem
}

func (tm *testMesh) stopMember(name string) {
	tm.mu.Lock()
	m := tm.members[name]
	tm.mu.Unlock()
	m.stop()
	m.stop = nil
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
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

// coffeeService is a small exported service of one cluster.
func coffeeService(cluster, name string, endpoints int, port uint32) *registry.Service {
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

func clusterInfo(cluster string) *registry.ClusterInfo {
	return &registry.ClusterInfo{Network: "net-" + cluster, Locality: &registry.Locality{Region: "region-" + cluster}, TrustDomain: cluster + ".shop"}
}

func (m *testMember) update(t *testing.T, services ...*registry.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.member.Update(ctx, clusterInfo(m.name), services); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback TCP address free now, from
// below the kernel's ephemeral port range, so that no outgoing connection
// takes it while a stopped hub is away.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	for range 1000 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	tb.Fatal("no free port below the ephemeral range")
	return ""
}
