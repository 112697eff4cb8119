package registry

import (
	"fmt"

	"github.com/federate/federate/registry/registrypb"
)

// The model is the protobuf schema in registrypb; these aliases give it the
// names the rest of the code uses.
type (
	Service     = registrypb.Service
	Endpoint    = registrypb.Endpoint
	Port        = registrypb.Port
	Locality    = registrypb.Locality
	Gateway     = registrypb.Gateway
	ClusterInfo = registrypb.ClusterInfo
	Version     = registrypb.Version
	Record      = registrypb.Record
)

// InfoKey is the record key of a slice's ClusterInfo.
const InfoKey = ""

// Compare orders versions: -1 if a is older than b, 0 if equal, +1 if newer.
// A nil version is older than any other.
func Compare(a, b *Version) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	if a.GetIncarnation() != b.GetIncarnation() {
		if a.GetIncarnation() < b.GetIncarnation() {
			return -1
		}
		return 1
	}
	switch {
	case a.GetCounter() < b.GetCounter():
		return -1
	case a.GetCounter() > b.GetCounter():
		return 1
	}
	return 0
}

// FormatVersion renders a version as "incarnation.counter".
func FormatVersion(v *Version) string {
	return fmt.Sprintf("%d.%d", v.GetIncarnation(), v.GetCounter())
}

// ValidClusterName reports whether name can name a cluster: a DNS label.
func ValidClusterName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("registry: cluster name %q must be 1-63 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("registry: cluster name %q must be lowercase letters, digits and inner dashes", name)
		}
	}
	return nil
}
