package locality

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

func regEP(addr, l, network string, health registrypb.Health) *registry.Endpoint {
	lc, _ := Parse(l)
	return &registry.Endpoint{Address: addr, Locality: lc.Proto(), Network: network, Health: health, Ports: map[string]uint32{"http": 8080}}
}

func TestSplitHorizon(t *testing.T) {
	port := &registry.Port{Name: "http", Number: 80}
	healthy, unhealthy := registrypb.Health_HEALTHY, registrypb.Health_UNHEALTHY
	east := Source{
		Cluster: "east",
		Info:    &registry.ClusterInfo{Network: "net-east"},
		Service: &registry.Service{Hostname: "svc", Endpoints: []*registry.Endpoint{
			regEP("10.0.0.1", "us/a", "net-east", healthy),
			regEP("10.0.0.2", "", "", healthy), // no locality, no network: kept
		}},
	}
	tests := []struct {
		name     string
		sources  []Source
		want     []string // address:port locality weight health
		warnings []string
	}{{
		name: "gateways in their localities, weighted by endpoints behind them",
		sources: []Source{east, {
			Cluster: "west",
			Info: &registry.ClusterInfo{Network: "net-west", Gateways: []*registry.Gateway{
				{Address: "192.0.2.1", Port: 15443, Locality: &registry.Locality{Region: "eu", Zone: "b"}},
				{Address: "192.0.2.2", Locality: &registry.Locality{Region: "eu", Zone: "c"}},
			}},
			Service: &registry.Service{Endpoints: []*registry.Endpoint{
				regEP("10.1.0.1", "eu/b", "net-west", healthy),
				regEP("10.1.0.2", "eu/b", "net-west", unhealthy),
				regEP("10.1.0.3", "eu/b", "net-west", healthy),
				regEP("10.1.0.4", "eu/c", "net-west", unhealthy),
			}},
		}},
		want: []string{
			"10.0.0.1:8080 us/a 1 HEALTHY", "10.0.0.2:8080  1 HEALTHY",
			"192.0.2.1:15443 eu/b 2 HEALTHY",   // two usable endpoints behind it
			"192.0.2.2:15443 eu/c 1 UNHEALTHY", // all behind it unhealthy
		},
	}, {
		name: "one gateway, two localities: it stands for the heavier, the other is counted there",
		sources: []Source{east, {
			Cluster: "west",
			Info:    &registry.ClusterInfo{Network: "net-west", Gateways: []*registry.Gateway{{Address: "192.0.2.1", Port: 15443}}},
			Service: &registry.Service{Endpoints: []*registry.Endpoint{
				regEP("10.1.0.1", "eu/b", "net-west", healthy),
				regEP("10.1.0.2", "eu/c", "net-west", healthy),
				regEP("10.1.0.3", "eu/c", "net-west", healthy),
				regEP("10.1.0.4", "", "net-west", healthy),
			}},
		}},
		want:     []string{"10.0.0.1:8080 us/a 1 HEALTHY", "10.0.0.2:8080  1 HEALTHY", "192.0.2.1:15443 eu/c 4 HEALTHY"},
		warnings: []string{`no gateway of its own for locality "eu/b"`, `no gateway of its own for locality ""`},
	}, {
		name: "two gateways share a locality: weights scale so the split is exact",
		sources: []Source{east, {
			Cluster: "west",
			Info: &registry.ClusterInfo{Network: "net-west", Gateways: []*registry.Gateway{
				{Address: "192.0.2.1", Port: 15443}, {Address: "192.0.2.2", Port: 15443},
			}},
			Service: &registry.Service{Endpoints: []*registry.Endpoint{
				regEP("10.1.0.1", "eu/b", "net-west", healthy),
				regEP("10.1.0.2", "eu/b", "net-west", healthy),
				regEP("10.1.0.3", "eu/b", "net-west", healthy),
			}},
		}},
		// scale 2: local 1 -> 2; 3 endpoints over 2 gateways -> 3 each
		want: []string{"10.0.0.1:8080 us/a 2 HEALTHY", "10.0.0.2:8080  2 HEALTHY", "192.0.2.1:15443 eu/b 3 HEALTHY", "192.0.2.2:15443 eu/b 3 HEALTHY"},
	}, {
		name: "a network without a gateway is unreachable",
		sources: []Source{east, {
			Cluster: "dark",
			Info:    &registry.ClusterInfo{Network: "net-dark"},
			Service: &registry.Service{Hostname: "svc", Endpoints: []*registry.Endpoint{regEP("10.2.0.1", "eu/b", "", healthy)}},
		}},
		want:     []string{"10.0.0.1:8080 us/a 1 HEALTHY", "10.0.0.2:8080  1 HEALTHY"},
		warnings: []string{"1 endpoints of cluster dark on network net-dark are unreachable"},
	}, {
		name: "a repeated endpoint address is kept once",
		sources: []Source{east, {
			Cluster: "east2",
			Info:    &registry.ClusterInfo{Network: "net-east"},
			Service: &registry.Service{Endpoints: []*registry.Endpoint{regEP("10.0.0.1", "us/b", "", healthy)}},
		}},
		want:     []string{"10.0.0.1:8080 us/a 1 HEALTHY", "10.0.0.2:8080  1 HEALTHY"},
		warnings: []string{"10.0.0.1:8080 is listed by more than one endpoint"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := SplitHorizon("net-east", port, tt.sources)
			var lines []string
			for _, e := range got {
				lines = append(lines, strings.Join([]string{e.HostPort(), e.Locality.String(), strconv.FormatUint(uint64(e.Weight), 10), e.Health.String()}, " "))
			}
			if diff := cmp.Diff(tt.want, lines); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if len(warnings) != len(tt.warnings) {
				t.Fatalf("warnings %v, want %d", warnings, len(tt.warnings))
			}
			for _, w := range tt.warnings {
				if !hasWarning(warnings, w) {
					t.Errorf("warnings %v do not mention %q", warnings, w)
				}
			}
		})
	}
}

func TestSplitHorizonGatewayLabels(t *testing.T) {
	west := Source{
		Cluster: "west",
		Info:    &registry.ClusterInfo{Network: "n2", Gateways: []*registry.Gateway{{Address: "192.0.2.1", Port: 15443}}},
		Service: &registry.Service{Endpoints: []*registry.Endpoint{
			{Address: "10.1.0.1", Network: "n2", Labels: map[string]string{"app": "a", "version": "v1"}},
			{Address: "10.1.0.2", Network: "n2", Labels: map[string]string{"app": "a", "version": "v2"}},
		}},
	}
	got, _ := SplitHorizon("n1", &registry.Port{Number: 80}, []Source{west})
	if len(got) != 1 {
		t.Fatalf("endpoints %+v, want one gateway", got)
	}
	want := map[string]string{"app": "a"}
	if diff := cmp.Diff(want, got[0].Labels); diff != "" {
		t.Errorf("gateway labels (-want +got):\n%s", diff)
	}
	if got[0].Cluster != "west" || got[0].Network != "n2" {
		t.Errorf("gateway endpoint cluster %q network %q, want west n2 (failoverPriority uses them)", got[0].Cluster, got[0].Network)
	}
}
