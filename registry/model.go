package registry

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

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

// ParseLocality parses Istio's "region/zone/subzone" form. The empty string
// is the empty locality; empty parts and white space are errors.
func ParseLocality(s string) (*Locality, error) {
	if s == "" {
		return &Locality{}, nil
	}
	const want = "use region, region/zone or region/zone/subzone"
	if strings.ContainsFunc(s, unicode.IsSpace) {
		return nil, fmt.Errorf("locality %q contains white space: %s", s, want)
	}
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return nil, fmt.Errorf("locality %q has %d parts: %s", s, len(parts), want)
	}
	if slices.Contains(parts, "") {
		return nil, fmt.Errorf("locality %q has an empty part: %s", s, want)
	}
	l := &Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.Subzone = parts[2]
	}
	return l, nil
}

// FormatLocality renders a locality as "region/zone/subzone", dropping empty
// trailing parts.
func FormatLocality(l *Locality) string {
	parts := []string{l.GetRegion(), l.GetZone(), l.GetSubzone()}
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return strings.Join(parts, "/")
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
