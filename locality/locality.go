package locality

import (
	"fmt"
	"strings"

	"github.com/federate/federate/registry"
)

// Locality is Istio's region/zone/subzone as a comparable value.
type Locality struct {
	Region, Zone, Subzone string
}

// Parse parses "region/zone/subzone" with registry.ParseLocality, the one
// parser of the syntax. The empty string is the empty locality. Parts may
// not be empty, contain white space, control characters or '*' (a wildcard
// belongs in a pattern, not in a locality).
func Parse(s string) (Locality, error) {
	l, err := registry.ParseLocality(s)
	if err != nil {
		return Locality{}, err
	}
	return FromProto(l), nil
}

// String renders "region/zone/subzone", dropping empty trailing parts, as
// registry.FormatLocality does.
func (l Locality) String() string {
	return registry.FormatLocality(&registry.Locality{Region: l.Region, Zone: l.Zone, Subzone: l.Subzone})
}

// IsZero reports whether the locality is unknown.
func (l Locality) IsZero() bool { return l == Locality{} }

// FromProto converts the registry's locality; nil is the empty locality.
func FromProto(l *registry.Locality) Locality {
	return Locality{Region: l.GetRegion(), Zone: l.GetZone(), Subzone: l.GetSubzone()}
}

// Proto converts to the registry's locality.
func (l Locality) Proto() *registry.Locality {
	return &registry.Locality{Region: l.Region, Zone: l.Zone, Subzone: l.Subzone}
}

// Relation is how close an endpoint's locality is to a client's, in Istio's
// order (util.LbPriority): the value is the priority Istio assigns before
// region failover rules and compaction.
type Relation int

// Relations from closest to farthest.
const (
	SameSubzone     Relation = iota // region, zone and subzone equal
	SameZone                        // region and zone equal, subzone differs
	SameRegion                      // region equal, zone differs
	OtherRegion                     // region differs
	NotFailoverPeer                 // region differs and is not the failover target of the client's region
)

// Relate compares an endpoint locality with the client's.
func Relate(client, endpoint Locality) Relation {
	switch {
	case client.Region != endpoint.Region:
		return OtherRegion
	case client.Zone != endpoint.Zone:
		return SameRegion
	case client.Subzone != endpoint.Subzone:
		return SameZone
	}
	return SameSubzone
}

// Pattern is a distribute locality pattern: "*", "region", "region/*",
// "region/zone", "region/zone/*" or "region/zone/subzone". An empty or "*"
// part matches anything.
type Pattern struct {
	Region, Zone, Subzone string
	text                  string
}

// ParsePattern parses a distribute pattern the way Istio validates it: at
// most one '*', and only as the last part.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf("%w: empty pattern: use *, region, region/* or region/zone/*", ErrInvalidLocality)
	}
	parts, err := registry.SplitLocality(s)
	if err != nil {
		return Pattern{}, err
	}
	for i, p := range parts {
		if !strings.Contains(p, "*") {
			continue
		}
		if p != "*" || i != len(parts)-1 {
			return Pattern{}, fmt.Errorf("%w pattern %q: '*' must be a whole part and the last one, as in region/* or region/zone/*", ErrInvalidLocality, s)
		}
	}
	pt := Pattern{text: s, Region: parts[0]}
	if len(parts) > 1 {
		pt.Zone = parts[1]
	}
	if len(parts) > 2 {
		pt.Subzone = parts[2]
	}
	return pt, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.text }

// Match reports whether l is in the pattern, as Istio's LocalityMatch.
func (p Pattern) Match(l Locality) bool {
	return (p.Region == "*" || p.Region == l.Region) &&
		(p.Zone == "" || p.Zone == "*" || p.Zone == l.Zone) &&
		(p.Subzone == "" || p.Subzone == "*" || p.Subzone == l.Subzone)
}

// overlaps reports whether some locality matches both patterns: at every
// level one is a wildcard or both are equal. Istio refuses such lists
// because the map order would decide which weight applies.
func (p Pattern) overlaps(q Pattern) bool {
	any := func(s string) bool { return s == "" || s == "*" }
	level := func(a, b string) bool { return any(a) || any(b) || a == b }
	if p.Region == "*" || q.Region == "*" {
		return true
	}
	return level(p.Region, q.Region) && level(p.Zone, q.Zone) && level(p.Subzone, q.Subzone)
}
