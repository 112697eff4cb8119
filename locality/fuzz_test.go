package locality

import (
	"testing"

	"github.com/federate/federate/registry/registrypb"
)

// FuzzParse checks that any locality that parses round-trips through
// String, and that nothing panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "us-east", "us-east/us-east-1a", "r/z/s", "a//b", "*", "a/b/c/d", " a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		if l.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, l.String())
		}
		if _, err := ParsePattern(s); s != "" && err != nil {
			t.Fatalf("locality %q is not a valid pattern: %v", s, err)
		}
	})
}

// FuzzParseDestinationRules checks that any rule that parses yields
// assignments valid for Envoy and gRPC, and that nothing panics.
func FuzzParseDestinationRules(f *testing.F) {
	f.Add([]byte(dr("failover: [{from: r1, to: r2}]", outlier)))
	f.Add([]byte(dr("distribute: [{from: 'r1/*', to: {'r1/z1/*': 80, 'r2/*': 20}}]")))
	f.Add([]byte(dr("failoverPriority: [topology.istio.io/network, version=v1]", outlier)))
	endpoints := []Endpoint{
		{Address: "10.0.0.1", Port: 80, Locality: Locality{"r1", "z1", ""}, Network: "n1", Labels: map[string]string{"version": "v1"}, Health: registrypb.Health_HEALTHY},
		{Address: "10.0.0.2", Port: 80, Locality: Locality{"r1", "z2", ""}, Network: "n1", Health: registrypb.Health_UNHEALTHY},
		{Address: "10.0.0.3", Port: 80, Locality: Locality{"r2", "z1", "s"}, Network: "n2", Labels: map[string]string{"version": "v2"}},
		{Address: "10.0.0.4", Port: 80},
	}
	client := Client{Locality: Locality{"r1", "z1", ""}, Network: "n1", Labels: map[string]string{"version": "v1"}}
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {}\n---\n" + dr("failover: [{from: r1, to: r2}]", outlier)))
	f.Fuzz(func(t *testing.T, data []byte) {
		// A stream a config directory may hold: other kinds are skipped,
		// and whatever is a DestinationRule obeys the same invariants.
		rules, err := ParseDestinationRulesIn(data)
		if strict, serr := ParseDestinationRules(data); serr == nil && (err != nil || len(strict) != len(rules)) {
			t.Fatalf("a stream of DestinationRules only: %d rules strictly, %d (%v) skipping other kinds", len(strict), len(rules), err)
		}
		if err != nil {
			return
		}
		for _, r := range rules {
			_ = r.Check(endpoints)
			for _, s := range append(r.Spec.GetSubsets(), nil) {
				p := Assign(r.Policy(s.GetName(), 0), client, endpoints)
				checkInvariants(t, p, 1)
				_, _ = NewPicker(p).Pick()
			}
		}
	})
}
