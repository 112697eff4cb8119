package istiod

import (
	"testing"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// A cluster without a gateway gets nothing (traffic only crosses
// gateways), a file-source service without a Kubernetes name is skipped,
// and WorkloadEntry names stay the same for the same group.
func TestBuild(t *testing.T) {
	ep := func(zone, version string) *registry.Endpoint {
		return &registry.Endpoint{Health: registrypb.Health_HEALTHY, Locality: &registry.Locality{Region: "eu", Zone: zone}, Labels: map[string]string{"version": version}}
	}
	coffee := &registry.Service{Hostname: "coffee.shop.svc.cluster.local", Namespace: "shop", Name: "coffee", Endpoints: []*registry.Endpoint{ep("a", "v1"), ep("b", "v1")}}
	vm := &registry.Service{Hostname: "billing.internal", Endpoints: []*registry.Endpoint{ep("a", "v1")}}
	remotes := []Remote{
		{Cluster: "west", Gateways: []*registry.Gateway{{Address: "198.51.100.7", Port: 15443}}, Services: []*registry.Service{coffee, vm}},
		{Cluster: "north", Services: []*registry.Service{coffee}},
	}
	d := build(remotes, "federate-system")
	if len(d.gateways) != 1 || d.gateways["federate-system/federate-gateway-west"] == nil {
		t.Errorf("gateways: %v", d.gateways)
	}
	if len(d.entries) != 1 || len(d.workload) != 2 {
		t.Errorf("%d ServiceEntries, %d WorkloadEntries; want 1 and 2", len(d.entries), len(d.workload))
	}
	again := build(remotes, "federate-system")
	for k := range d.workload {
		if again.workload[k] == nil {
			t.Errorf("WorkloadEntry %s renamed on the next build", k)
		}
	}
	if _, ok := d.gateways["federate-system/federate-gateway-west"].Labels[GatewayPortLabel]; ok {
		t.Error("a gateway on 15443 has a gatewayPort label")
	}
}
