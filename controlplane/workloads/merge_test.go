package workloads

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
)

// An entry joins the services whose selector picks it, in its namespace,
// at its sidecar's inbound port, and Entries names that port for every
// port name. It replaces the source's endpoint at its address and ports
// (the WorkloadEntry object mirrored for it), not another workload on the
// same address.
func TestMergeJoinsSelectedServicesAndReplacesTheMirroredObject(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	selectors := map[string]registry.WorkloadSelector{
		"barista.shop.svc.cluster.local": {Labels: map[string]string{"app": "barista"}},
		"till.shop.svc.cluster.local":    {Labels: map[string]string{"app": "till"}},
		"barista.lab.svc.cluster.local":  {Labels: map[string]string{"app": "barista"}},
	}
	w, err := New(Config{Federation: noFederation{}, Store: st, Logger: slog.New(slog.DiscardHandler),
		Selectors: func() map[string]registry.WorkloadSelector { return selectors }})
	if err != nil {
		t.Fatal(err)
	}
	w.entries["shop/barista-10.0.0.1"] = &workloadEntry{namespace: "shop", name: "barista-10.0.0.1", group: "barista",
		address: "10.0.0.1", network: "net-central", labels: map[string]string{"app": "barista"}, appPorts: map[string]uint32{"http": 8080},
		id: spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista"), inboundPort: 15006, streams: 1, healthy: true}
	endpoint := func(port uint32) *registry.Endpoint {
		return &registry.Endpoint{Address: "10.0.0.1", Network: "net-central", Ports: map[string]uint32{"http": port}, Health: registrypb.Health_HEALTHY}
	}
	service := func(host, ns string, eps ...*registry.Endpoint) *registry.Service {
		return &registry.Service{Hostname: host, Namespace: ns, Ports: []*registry.Port{{Name: "http", Number: 8083}}, Endpoints: eps}
	}
	merged := w.Merge([]*registry.Service{
		// The mirrored object, and a workload of its own on the VM's port 9090.
		service("barista.shop.svc.cluster.local", "shop", endpoint(15006), endpoint(9090)),
		service("till.shop.svc.cluster.local", "shop"),
		service("barista.lab.svc.cluster.local", "lab"),
	})
	var got []string
	for _, svc := range merged {
		var eps []string
		for _, ep := range svc.GetEndpoints() {
			eps = append(eps, fmt.Sprintf("%s:%d %s", ep.GetAddress(), ep.GetPorts()["http"], ep.GetSpiffeId()))
		}
		got = append(got, fmt.Sprintf("%s %v", svc.GetHostname(), eps))
	}
	want := []string{
		"barista.shop.svc.cluster.local [10.0.0.1:9090  10.0.0.1:15006 spiffe://central.shop/ns/shop/sa/barista]",
		"till.shop.svc.cluster.local []",
		"barista.lab.svc.cluster.local []",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("merged:\n%q\nwant:\n%q", got, want)
	}
	if es := w.Entries(); len(es) != 1 || fmt.Sprint(es[0].Ports) != "map[http:15006]" || es[0].Network != "net-central" {
		t.Errorf("entries %+v, want the one with http at 15006 on net-central", es)
	}
}
