package xds

import (
	"flag"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/federate/federate/eastwest/xdsclient"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func labInput(t *testing.T) Input {
	t.Helper()
	loc, _ := registry.ParseLocality("eu-central/eu-central-1a")
	services, err := file.Load(file.Config{Dir: "testdata", Network: "net-central", Locality: loc, TrustDomain: "central.shop"})
	if err != nil {
		t.Fatal(err)
	}
	return Input{
		Version: "1", Network: "net-central", Services: services,
		Subsets: map[string][]Subset{"payment.shop.svc.cluster.local": {
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		}},
		Cluster:  "central",
		Internal: map[sni.Component]string{sni.ControlPlane: "127.0.0.1:15013", sni.Gossip: "127.0.0.1:15014"},
		Locality: locality.FromProto(loc),
	}
}

// TestGolden renders the lab's central cluster and compares every resource
// with testdata/*.golden.json (semantically: protojson output is not
// byte-stable). Run with -update to rewrite them.
func TestGolden(t *testing.T) {
	snap, err := Build(labInput(t))
	if err != nil {
		t.Fatal(err)
	}
	for typ, file := range map[resourcev3.Type]string{
		resourcev3.ListenerType: "listeners.golden.json",
		resourcev3.ClusterType:  "clusters.golden.json",
		resourcev3.EndpointType: "endpoints.golden.json",
	} {
		var list []*anypb.Any
		names := make([]string, 0)
		for name := range snap.GetResources(typ) {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			a, err := anypb.New(snap.GetResources(typ)[name].(proto.Message))
			if err != nil {
				t.Fatal(err)
			}
			list = append(list, a)
		}
		got := &discoverypb.DiscoveryResponse{TypeUrl: typ, Resources: list}
		path := filepath.Join("testdata", file)
		if *update {
			data, _ := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(got)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		want := new(discoverypb.DiscoveryResponse)
		if err := protojson.Unmarshal(data, want); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s differs (-want +got; run with -update if intended):\n%s", file, diff)
		}
	}
}

func TestOnlyOwnNetworkAndSubsets(t *testing.T) {
	snap, err := Build(labInput(t))
	if err != nil {
		t.Fatal(err)
	}
	eps := snap.GetResources(resourcev3.EndpointType)
	count := func(name string) int {
		n := 0
		for _, l := range eps[name].(*endpointpb.ClusterLoadAssignment).GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
		return n
	}
	cases := map[string]int{
		ClusterName(8081, "", "payment.shop.svc.cluster.local"):   2, // the VM on net-vm is left out
		ClusterName(8081, "v1", "payment.shop.svc.cluster.local"): 1,
		ClusterName(8081, "v2", "payment.shop.svc.cluster.local"): 1,
		ClusterName(9090, "", "payment.shop.svc.cluster.local"):   2,
		ClusterName(8082, "", "inventory.shop.svc.cluster.local"): 1,
	}
	for name, want := range cases {
		if got := count(name); got != want {
			t.Errorf("%s: %d endpoints, want %d", name, got, want)
		}
	}
	if n := len(snap.GetResources(resourcev3.ClusterType)); n != 9 {
		t.Errorf("%d clusters, want 9 (payment 2 ports x 3 subsets, inventory 1, control plane, gossip)", n)
	}
}

// TestInternalNames: the gateway's own cluster's internal names reach the
// local control plane and gossip listener; no other cluster's do.
func TestInternalNames(t *testing.T) {
	snap, err := Build(labInput(t))
	if err != nil {
		t.Fatal(err)
	}
	table := tableOf(t, snap)
	for name, want := range map[string]string{
		"controlplane.central.federate.internal": "127.0.0.1:15013",
		"gossip.central.federate.internal":       "127.0.0.1:15014",
	} {
		if got, ok := table.Lookup(name); !ok || len(got) != 1 || got[0] != want {
			t.Errorf("%s routes to %v, want [%s]", name, got, want)
		}
	}
	for _, name := range []string{"gossip.east.federate.internal", "controlplane.west.federate.internal"} {
		if got, ok := table.Lookup(name); ok {
			t.Errorf("%s routes to %v; another cluster's internal name must be refused", name, got)
		}
	}
	in := labInput(t)
	in.Internal[sni.Gossip] = "no-port"
	if _, err := Build(in); err == nil {
		t.Error("Build accepted an internal address without a port")
	}
}

func TestEmptyRegistryIsValid(t *testing.T) {
	snap, err := Build(Input{Version: "0", Network: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(snap.GetResources(resourcev3.ListenerType)); n != 1 {
		t.Errorf("%d listeners, want 1", n)
	}
}

// tableOf is the routing table a gateway's client makes of snap.
func tableOf(t *testing.T, snap *cachev3.Snapshot) *xdsclient.Table {
	t.Helper()
	var resps []*discoverypb.DiscoveryResponse
	for _, typ := range []resourcev3.Type{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType} {
		resp := &discoverypb.DiscoveryResponse{TypeUrl: typ}
		for _, r := range snap.GetResources(typ) {
			a, err := anypb.New(r.(proto.Message))
			if err != nil {
				t.Fatal(err)
			}
			resp.Resources = append(resp.Resources, a)
		}
		resps = append(resps, resp)
	}
	table, err := xdsclient.Decode(resps...)
	if err != nil {
		t.Fatal(err)
	}
	return table
}
