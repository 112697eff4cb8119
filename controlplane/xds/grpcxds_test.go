package xds

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry/registrypb"
)

// The proxyless gRPC client is an independent reader of our EDS: these
// tests prove that the priorities and weights locality computes mean to
// grpc-go what they mean to us. gRPC needs (libraries.md §4.3): an API
// listener with an HttpConnectionManager whose filters end with the
// router, an EDS cluster over ADS, explicit locality weights, priorities
// contiguous from 0 and no repeated address. It has no overprovisioning
// factor: a priority is used entirely or not at all.

const grpcService = "svc"

// backend is one gRPC server that answers health checks.
type backend struct {
	addr     string
	locality locality.Locality
	srv      *grpc.Server
	stopOnce sync.Once
}

func (b *backend) stop() { b.stopOnce.Do(b.srv.Stop) }

func startBackend(t *testing.T, l locality.Locality) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: lis.Addr().String(), locality: l, srv: grpc.NewServer()}
	healthpb.RegisterHealthServer(b.srv, grpchealth.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.srv.Serve(lis) }()
	t.Cleanup(func() {
		b.stop()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("backend did not stop")
		}
	})
	return b
}

// grpcHarness is an ADS server (our Server) and a proxyless client.
type grpcHarness struct {
	t        *testing.T
	ctx      context.Context
	server   *Server
	backends []*backend
	client   healthpb.HealthClient
	version  int
}

func newGRPCHarness(t *testing.T, localities ...string) *grpcHarness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	h := &grpcHarness{t: t, ctx: ctx, server: NewServer(ctx, nil)}
	for _, s := range localities {
		l, err := locality.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		h.backends = append(h.backends, startBackend(t, l))
	}
	g := grpc.NewServer()
	h.server.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-served })

	// The bootstrap goes to this resolver only: no process-wide env var.
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "proxyless-client", "locality": {"region": "r1", "zone": "z1"}}
	}`, lis.Addr().String())
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+grpcService, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.client = healthpb.NewHealthClient(conn)
	return h
}

// publish assigns the backends under policy for a client in r1/z1 and
// serves Listener, RouteConfiguration, Cluster and ClusterLoadAssignment.
func (h *grpcHarness) publish(policy locality.Policy, health map[*backend]registrypb.Health) locality.Priorities {
	h.t.Helper()
	var endpoints []locality.Endpoint
	for _, b := range h.backends {
		host, port, _ := net.SplitHostPort(b.addr)
		n, _ := strconv.Atoi(port)
		hs, ok := health[b]
		if !ok {
			hs = registrypb.Health_HEALTHY
		}
		endpoints = append(endpoints, locality.Endpoint{Address: host, Port: uint32(n), Locality: b.locality, Health: hs})
	}
	client := locality.Client{Locality: locality.Locality{Region: "r1", Zone: "z1"}}
	prio := locality.Assign(policy, client, endpoints)
	cla, err := LoadAssignment(grpcService+"-cluster", prio)
	if err != nil {
		h.t.Fatal(err)
	}
	cluster := &clusterpb.Cluster{
		Name:                 grpcService + "-cluster",
		ClusterDiscoveryType: &clusterpb.Cluster_Type{Type: clusterpb.Cluster_EDS},
		EdsClusterConfig: &clusterpb.Cluster_EdsClusterConfig{EdsConfig: &corepb.ConfigSource{
			ResourceApiVersion:    corepb.ApiVersion_V3,
			ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
		}},
		ConnectTimeout: durationpb.New(time.Second),
		LbPolicy:       clusterpb.Cluster_ROUND_ROBIN,
	}
	ApplyLocalityPolicy(cluster, policy)
	h.version++
	snap, err := cachev3.NewSnapshot(strconv.Itoa(h.version), map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {apiListener(h.t)},
		resourcev3.RouteType: {&routepb.RouteConfiguration{
			Name: grpcService + "-route",
			VirtualHosts: []*routepb.VirtualHost{{
				Name: grpcService, Domains: []string{"*"},
				Routes: []*routepb.Route{{
					Match:  &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: ""}},
					Action: &routepb.Route_Route{Route: &routepb.RouteAction{ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: cluster.Name}}},
				}},
			}},
		}},
		resourcev3.ClusterType:  {cluster},
		resourcev3.EndpointType: {cla},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	// No snap.Consistent(): it finds route references in filter chains
	// only, not in API listeners.
	if err := h.server.Update(h.ctx, snap); err != nil {
		h.t.Fatal(err)
	}
	return prio
}

func apiListener(t *testing.T) *listenerpb.Listener {
	router, err := anypb.New(&routerpb.Router{})
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmpb.HttpConnectionManager{
		RouteSpecifier: &hcmpb.HttpConnectionManager_Rds{Rds: &hcmpb.Rds{
			RouteConfigName: grpcService + "-route",
			ConfigSource: &corepb.ConfigSource{
				ResourceApiVersion:    corepb.ApiVersion_V3,
				ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: []*hcmpb.HttpFilter{{Name: "router", ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerpb.Listener{Name: grpcService, ApiListener: &listenerpb.ApiListener{ApiListener: hcm}}
}

// call makes one RPC and returns the backend address that answered.
func (h *grpcHarness) call() (string, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := h.client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return "", err
	}
	return p.Addr.String(), nil
}

// countByLocality makes n RPCs and counts answers per backend locality.
func (h *grpcHarness) countByLocality(n int) map[locality.Locality]int {
	h.t.Helper()
	byAddr := make(map[string]locality.Locality)
	for _, b := range h.backends {
		byAddr[b.addr] = b.locality
	}
	out := make(map[locality.Locality]int)
	for range n {
		addr, err := h.call()
		if err != nil {
			h.t.Fatalf("RPC failed: %v", err)
		}
		out[byAddr[addr]]++
	}
	return out
}

// waitFor makes RPCs until one is answered in want, and returns how long
// it took; failed RPCs during the switch are counted, not fatal.
func (h *grpcHarness) waitFor(want locality.Locality) (time.Duration, int) {
	h.t.Helper()
	byAddr := make(map[string]locality.Locality)
	for _, b := range h.backends {
		byAddr[b.addr] = b.locality
	}
	start := time.Now()
	failed := 0
	for h.ctx.Err() == nil {
		addr, err := h.call()
		if err != nil {
			failed++
			continue
		}
		if byAddr[addr] == want {
			return time.Since(start), failed
		}
	}
	h.t.Fatalf("no RPC reached %s before the deadline (%d failed)", want, failed)
	return 0, 0
}

func parseOneRule(t *testing.T, yaml string) locality.Policy {
	t.Helper()
	rules, err := locality.ParseDestinationRules([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return rules[0].Policy("", 0)
}

func TestGRPCXDSLocalityWeights(t *testing.T) {
	h := newGRPCHarness(t, "r1/z1", "r1/z1", "r1/z2", "r2/z3")
	policy := parseOneRule(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: r1/z1/*
          to: {"r1/z1/*": 60, "r1/z2/*": 30, "r2/*": 10}
`)
	prio := h.publish(policy, nil)
	if prio.Levels() != 1 || len(prio.Groups) != 3 {
		t.Fatalf("assignment %+v, want three localities at priority 0", prio.Groups)
	}
	const n = 2000
	got := h.countByLocality(n)
	want := map[locality.Locality]float64{{Region: "r1", Zone: "z1"}: 60, {Region: "r1", Zone: "z2"}: 30, {Region: "r2", Zone: "z3"}: 10}
	for l, pct := range want {
		share := 100 * float64(got[l]) / n
		t.Logf("%s: %d of %d RPCs (%.1f%%), weight %.0f%%", l, got[l], n, share, pct)
		if share < pct-5 || share > pct+5 {
			t.Errorf("%s got %.1f%% of RPCs, want %.0f%% ± 5", l, share, pct)
		}
	}
}

func TestGRPCXDSFailover(t *testing.T) {
	h := newGRPCHarness(t, "r1/z1", "r1/z1", "r1/z2", "r2/z3")
	policy := parseOneRule(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}
`)
	z1, z2 := locality.Locality{Region: "r1", Zone: "z1"}, locality.Locality{Region: "r1", Zone: "z2"}
	p0 := []*backend{h.backends[0], h.backends[1]}
	prio := h.publish(policy, nil)
	if prio.Levels() != 3 {
		t.Fatalf("assignment %+v, want priorities 0 (r1/z1), 1 (r1/z2), 2 (r2/z3)", prio.Groups)
	}
	if got := h.countByLocality(200); got[z1] != 200 {
		t.Fatalf("healthy priority 0: RPCs per locality %v, want all 200 in %s", got, z1)
	}

	// EDS marks priority 0 unhealthy while its servers still run: gRPC
	// drops them and uses priority 1 entirely (no overprovisioning).
	h.publish(policy, map[*backend]registrypb.Health{p0[0]: registrypb.Health_UNHEALTHY, p0[1]: registrypb.Health_UNHEALTHY})
	took, failed := h.waitFor(z2)
	t.Logf("EDS UNHEALTHY: traffic on priority 1 after %v (%d RPCs failed)", took, failed)
	if got := h.countByLocality(200); got[z2] != 200 {
		t.Fatalf("priority 0 unhealthy: RPCs per locality %v, want all 200 in %s", got, z2)
	}

	// Healthy again: traffic returns to priority 0.
	h.publish(policy, nil)
	took, _ = h.waitFor(z1)
	t.Logf("EDS HEALTHY again: back on priority 0 after %v", took)

	// The priority 0 servers stop and EDS has not changed yet: gRPC sees
	// them fail and moves on by itself.
	start := time.Now()
	for _, b := range p0 {
		b.stop()
	}
	took, failed = h.waitFor(z2)
	t.Logf("priority 0 servers stopped: traffic on priority 1 after %v (%d RPCs failed)", took, failed)
	if took > 10*time.Second {
		t.Errorf("failover took %v", took)
	}
	h.publish(policy, map[*backend]registrypb.Health{p0[0]: registrypb.Health_UNHEALTHY, p0[1]: registrypb.Health_UNHEALTHY})
	if got := h.countByLocality(200); got[z2] != 200 {
		t.Fatalf("after failover: RPCs per locality %v, want all 200 in %s", got, z2)
	}
	t.Logf("total from stop to steady state: %v", time.Since(start))
}
