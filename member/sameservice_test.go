package member

import (
	"testing"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// sameService compares the fields it knows: a field added to one of these
// messages must be added to it too, or a change of only that field would
// never be published.
func TestSameServiceKnowsEveryField(t *testing.T) {
	known := map[proto.Message]int{&registry.Service{}: 6, &registry.Endpoint{}: 8, &registry.Port{}: 3, &registry.Locality{}: 3}
	for m, n := range known {
		d := m.ProtoReflect().Descriptor()
		if got := d.Fields().Len(); got != n {
			t.Errorf("%s has %d fields, sameService compares %d: compare the new ones in member/sameservice.go", d.FullName(), got, n)
		}
	}
}

// sameService agrees with proto.Equal on a change of each field.
func TestSameServiceSeesEachChange(t *testing.T) {
	base := &registry.Service{
		Hostname: "a.shop.svc.cluster.local", Namespace: "shop", Name: "a", ExportTo: []string{"*"},
		Ports: []*registry.Port{{Name: "http", Number: 8080, Protocol: "HTTP"}},
		Endpoints: []*registry.Endpoint{{
			Address: "10.0.0.1", Ports: map[string]uint32{"http": 8080}, Network: "net-a",
			Locality: &registry.Locality{Region: "r", Zone: "z", Subzone: "s"},
			Labels:   map[string]string{"app": "a", "version": "v1"}, Health: registrypb.Health_HEALTHY,
			SpiffeId: "spiffe://a.shop/ns/shop/sa/a", Weight: 1,
		}},
	}
	changes := map[string]func(s *registry.Service){
		"hostname":          func(s *registry.Service) { s.Hostname = "b.shop.svc.cluster.local" },
		"namespace":         func(s *registry.Service) { s.Namespace = "other" },
		"name":              func(s *registry.Service) { s.Name = "b" },
		"export_to":         func(s *registry.Service) { s.ExportTo = []string{"east"} },
		"port name":         func(s *registry.Service) { s.Ports[0].Name = "grpc" },
		"port number":       func(s *registry.Service) { s.Ports[0].Number = 9090 },
		"port protocol":     func(s *registry.Service) { s.Ports[0].Protocol = "GRPC" },
		"one port more":     func(s *registry.Service) { s.Ports = append(s.Ports, &registry.Port{Name: "tcp"}) },
		"address":           func(s *registry.Service) { s.Endpoints[0].Address = "10.0.0.2" },
		"endpoint port":     func(s *registry.Service) { s.Endpoints[0].Ports["http"] = 8081 },
		"endpoint network":  func(s *registry.Service) { s.Endpoints[0].Network = "net-b" },
		"region":            func(s *registry.Service) { s.Endpoints[0].Locality.Region = "r2" },
		"zone":              func(s *registry.Service) { s.Endpoints[0].Locality.Zone = "z2" },
		"subzone":           func(s *registry.Service) { s.Endpoints[0].Locality.Subzone = "s2" },
		"no locality":       func(s *registry.Service) { s.Endpoints[0].Locality = nil },
		"label value":       func(s *registry.Service) { s.Endpoints[0].Labels["version"] = "v2" },
		"label removed":     func(s *registry.Service) { delete(s.Endpoints[0].Labels, "version") },
		"health":            func(s *registry.Service) { s.Endpoints[0].Health = registrypb.Health_UNHEALTHY },
		"spiffe id":         func(s *registry.Service) { s.Endpoints[0].SpiffeId = "spiffe://a.shop/ns/shop/sa/b" },
		"weight":            func(s *registry.Service) { s.Endpoints[0].Weight = 2 },
		"one endpoint more": func(s *registry.Service) { s.Endpoints = append(s.Endpoints, &registry.Endpoint{Address: "10.0.0.3"}) },
		"unknown field": func(s *registry.Service) {
			s.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
		},
	}
	if !sameService(base, proto.Clone(base).(*registry.Service)) {
		t.Fatal("sameService: a copy differs from its original")
	}
	for what, change := range changes {
		c := proto.Clone(base).(*registry.Service)
		change(c)
		if proto.Equal(base, c) {
			t.Fatalf("%s: the change changes nothing", what)
		}
		if sameService(base, c) || sameService(c, base) {
			t.Errorf("sameService misses a change of the %s", what)
		}
	}
}
