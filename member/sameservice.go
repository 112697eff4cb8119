package member

import (
	"maps"
	"slices"

	"github.com/federate/federate/registry"
	"google.golang.org/protobuf/proto"
)

// sameService is proto.Equal written out for registry.Service. Update
// runs it for every service of a control plane's list, 10,000 endpoints
// for 1,000 services, where proto.Equal's reflection or a deterministic
// encoding (sorting every map) costs ten times as much.
// TestSameServiceKnowsEveryField fails when a message gains a field.
func sameService(a, b *registry.Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.GetHostname() != b.GetHostname() || a.GetNamespace() != b.GetNamespace() || a.GetName() != b.GetName() ||
		!slices.Equal(a.GetExportTo(), b.GetExportTo()) ||
		!slices.EqualFunc(a.GetPorts(), b.GetPorts(), samePort) ||
		!slices.EqualFunc(a.GetEndpoints(), b.GetEndpoints(), sameEndpoint) {
		return false
	}
	if unknown(a) || unknown(b) {
		return proto.Equal(a, b) // fields of a newer schema: let reflection compare them
	}
	return true
}

func samePort(a, b *registry.Port) bool {
	return a.GetName() == b.GetName() && a.GetNumber() == b.GetNumber() && a.GetProtocol() == b.GetProtocol()
}

func sameEndpoint(a, b *registry.Endpoint) bool {
	return a.GetAddress() == b.GetAddress() && a.GetNetwork() == b.GetNetwork() &&
		a.GetHealth() == b.GetHealth() && a.GetSpiffeId() == b.GetSpiffeId() && a.GetWeight() == b.GetWeight() &&
		sameLocality(a.GetLocality(), b.GetLocality()) &&
		maps.Equal(a.GetPorts(), b.GetPorts()) && maps.Equal(a.GetLabels(), b.GetLabels())
}

func sameLocality(a, b *registry.Locality) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetRegion() == b.GetRegion() && a.GetZone() == b.GetZone() && a.GetSubzone() == b.GetSubzone()
}

// unknown reports whether s or any message in it carries fields this
// build does not know.
func unknown(s *registry.Service) bool {
	if len(s.ProtoReflect().GetUnknown()) > 0 {
		return true
	}
	for _, p := range s.GetPorts() {
		if len(p.ProtoReflect().GetUnknown()) > 0 {
			return true
		}
	}
	for _, e := range s.GetEndpoints() {
		if len(e.ProtoReflect().GetUnknown()) > 0 || e.GetLocality() != nil && len(e.GetLocality().ProtoReflect().GetUnknown()) > 0 {
			return true
		}
	}
	return false
}
