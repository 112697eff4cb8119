package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/etcdtest"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// haMesh is a mesh whose hub runs as replicas on a real 3-member etcd
// cluster: replica 0 is the mesh's own hub, the others share its etcd
// prefix and CA file.
type haMesh struct {
	*fedtest.Mesh
	t        testing.TB
	Etcd     *etcdtest.Cluster
	CAFile   string
	Replicas []*hub.Server
	stops    []func()
	log      *slog.Logger // for replicas; nil: the mesh's
	timers   gossip.Timers
	addrs    map[int][2]string // replica i's API and gossip addresses, kept for restarts
	stopped  map[int]bool

	cliOnce sync.Once
	cli     *clientv3.Client
}

func newHAMesh(t testing.TB, replicas int) *haMesh {
	t.Helper()
	return newHAMeshWith(t, replicas, gossip.Timers{}, nil)
}

// newHAMeshWith is newHAMesh with the members' liveness timers and the
// replicas' logger (nil: the mesh's).
func newHAMeshWith(t testing.TB, replicas int, timers gossip.Timers, log *slog.Logger) *haMesh {
	t.Helper()
	ec := etcdtest.Start(t, 3)
	h := &haMesh{t: t, Etcd: ec, CAFile: filepath.Join(t.TempDir(), "mesh-ca.pem"), log: log, timers: timers, addrs: make(map[int][2]string), stopped: make(map[int]bool)}
	if _, err := hub.CreateCAFile("shop", h.CAFile, time.Now()); err != nil {
		t.Fatal(err)
	}
	h.Mesh = fedtest.NewMeshWith(t, timers, func(c *hub.Config) {
		h.configure(c)
		if h.log != nil {
			c.Logger = h.log.With("node", "hub0")
		}
	})
	h.Replicas, h.stops = []*hub.Server{h.Hub}, []func(){h.StopHub}
	for i := 1; i < replicas; i++ {
		h.StartReplica(i)
	}
	return h
}

// configure points a hub's config at the mesh's etcd and CA file.
func (h *haMesh) configure(c *hub.Config) {
	c.Store, c.CAFile = hub.StoreEtcd, h.CAFile
	c.Etcd = hub.EtcdConfig{Endpoints: h.Etcd.Endpoints, CertFile: h.Etcd.CertFile, KeyFile: h.Etcd.KeyFile, CAFile: h.Etcd.CAFile}
}

// replicaConfig is the config of replica i, on addresses of its own,
// the same ones again when it restarts.
func (h *haMesh) replicaConfig(i int) hub.Config {
	addrs, ok := h.addrs[i]
	if !ok {
		addrs = [2]string{testport.Addr(h.t), testport.Addr(h.t)}
		h.addrs[i] = addrs
	}
	cfg := hub.Config{
		Mesh: "shop", Listen: addrs[0], GossipBind: addrs[1],
		DataDir: filepath.Join(h.Dir, fmt.Sprintf("hub%d", i)), GossipProfile: "lan",
		Timers: h.timers, Logger: h.Logger().With("node", fmt.Sprintf("hub%d", i)),
	}
	if h.log != nil {
		cfg.Logger = h.log.With("node", fmt.Sprintf("hub%d", i))
	}
	h.configure(&cfg)
	return cfg
}

// StartReplica starts replica i (i >= 1).
func (h *haMesh) StartReplica(i int) {
	h.t.Helper()
	srv, err := hub.New(h.replicaConfig(i))
	if err != nil {
		h.t.Fatal(err)
	}
	stop := fedtest.Start(h.t, srv.Run, srv.Ready())
	h.t.Cleanup(stop)
	for len(h.Replicas) <= i {
		h.Replicas, h.stops = append(h.Replicas, nil), append(h.stops, nil)
	}
	h.Replicas[i], h.stops[i] = srv, stop
	h.stopped[i] = false
}

// StopReplica stops replica i.
func (h *haMesh) StopReplica(i int) {
	h.stops[i]()
	h.stopped[i] = true
}

// RestartReplica starts a stopped replica i again on its addresses.
func (h *haMesh) RestartReplica(i int) {
	h.t.Helper()
	if i > 0 {
		h.StartReplica(i)
		return
	}
	h.StartHub()
	h.Replicas[0], h.stops[0] = h.Hub, h.StopHub
	h.stopped[0] = false
}

// RestartReplicas starts every stopped replica again at once, each on
// its addresses and data directory, as after a full outage, and returns
// when all are ready.
func (h *haMesh) RestartReplicas() {
	h.t.Helper()
	type run struct {
		srv  *hub.Server
		done chan error
		stop func()
	}
	runs := make(map[int]*run)
	for i := range h.Replicas {
		if !h.stopped[i] {
			continue
		}
		cfg := h.replicaConfig(i)
		if i == 0 {
			cfg = hub.Config{
				Mesh: "shop", Listen: h.HubAddr, GossipBind: h.HubGossip, DataDir: filepath.Join(h.Dir, "hub"),
				GossipProfile: "lan", Timers: h.timers, Logger: h.Logger().With("node", "hub"),
			}
			h.ConfigureHub(&cfg)
		}
		srv, err := hub.New(cfg)
		if err != nil {
			h.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &run{srv: srv, done: make(chan error, 1)}
		go func() { r.done <- srv.Run(ctx) }()
		r.stop = sync.OnceFunc(func() {
			cancel()
			select {
			case err := <-r.done:
				if err != nil {
					h.t.Errorf("replica %d stopped with error: %v", i, err)
				}
			case <-time.After(30 * time.Second):
				h.t.Errorf("replica %d did not stop within 30s", i)
			}
		})
		h.t.Cleanup(r.stop)
		runs[i] = r
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for i, r := range runs {
		select {
		case <-r.srv.Ready():
		case err := <-r.done:
			h.t.Fatalf("replica %d failed to start: %v", i, err)
		case <-timeout.C:
			h.t.Fatalf("replica %d did not become ready within 30s", i)
		}
		h.Replicas[i], h.stops[i], h.stopped[i] = r.srv, r.stop, false
	}
}

// Addr is replica i's address.
func (h *haMesh) Addr(i int) string { return h.Replicas[i].Addr() }

// seen is what one Subscribe stream received: the newest version per
// record, and the removals.
type seen struct {
	mu       sync.Mutex
	versions map[string]*registry.Version // cluster/key
	removed  map[string]bool
	synced   bool
	err      error
	done     chan struct{}
}

// subscribe opens a Subscribe stream on addr as cluster, resuming from
// known, and collects what it receives until the test ends.
func (h *haMesh) subscribe(cluster, addr string, known map[string]*registry.Version) *seen {
	h.t.Helper()
	conn, err := membership.Dial(addr, filepath.Join(h.Dir, cluster, membership.CredentialFile), filepath.Join(h.Dir, cluster, membership.CAFile))
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	stream, err := hubpb.NewHubClient(conn).Subscribe(ctx, &hubpb.SubscribeRequest{Known: &hubpb.VersionVector{Versions: known}})
	if err != nil {
		cancel()
		conn.Close()
		h.t.Fatal(err)
	}
	s := &seen{versions: make(map[string]*registry.Version), removed: make(map[string]bool), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			s.note(resp)
		}
	}()
	h.t.Cleanup(func() {
		cancel()
		<-s.done
		conn.Close()
	})
	return s
}

func (s *seen) note(resp *hubpb.SubscribeResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sr := range resp.GetRecords() {
		rec := new(registrypb.Record)
		if proto.Unmarshal(sr.GetRecord(), rec) != nil {
			continue
		}
		k := rec.GetCluster() + "/" + rec.GetKey()
		if old := s.versions[k]; old == nil || registry.Compare(rec.GetVersion(), old) > 0 {
			s.versions[k] = rec.GetVersion()
		}
	}
	for _, r := range resp.GetRemovals() {
		s.removed[r.GetCluster()] = true
	}
	s.synced = s.synced || resp.GetSynced()
}

// records counts the records received of cluster.
func (s *seen) records(cluster string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.versions {
		if len(k) > len(cluster) && k[:len(cluster)+1] == cluster+"/" {
			n++
		}
	}
	return n
}

// version returns the newest version received of cluster.
func (s *seen) version(cluster string) *registry.Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v *registry.Version
	for k, kv := range s.versions {
		if len(k) > len(cluster) && k[:len(cluster)+1] == cluster+"/" && registry.Compare(kv, v) > 0 {
			v = kv
		}
	}
	return v
}

func (s *seen) wasRemoved(cluster string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed[cluster]
}

func (s *seen) isSynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// services is n coffee services of cluster, the i-th with i+1 endpoints.
func services(cluster string, n int) []*registry.Service {
	out := make([]*registry.Service, n)
	for i := range out {
		out[i] = fedtest.CoffeeService(cluster, fmt.Sprintf("svc%02d", i), i+1, 18080)
	}
	return out
}

// has reports whether a record of cluster with key was received.
func (s *seen) has(cluster, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[cluster+"/"+key] != nil
}

// notNewer counts the records of cluster received at v or older.
func (s *seen) notNewer(cluster string, v *registry.Version) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, kv := range s.versions {
		if len(k) > len(cluster) && k[:len(cluster)+1] == cluster+"/" && registry.Compare(kv, v) <= 0 {
			n++
		}
	}
	return n
}
