package locality

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/federate/federate/registry/registrypb"
)

func loc(t *testing.T, s string) Locality {
	t.Helper()
	l, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// eps makes one healthy endpoint per "locality" entry, addressed 10.0.0.N.
func eps(t *testing.T, localities ...string) []Endpoint {
	t.Helper()
	var out []Endpoint
	for i, l := range localities {
		out = append(out, Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 80, Locality: loc(t, l), Health: registrypb.Health_HEALTHY})
	}
	return out
}

// summary renders groups as "priority:locality=weight" for compact wants.
func summary(p Priorities) []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, fmt.Sprintf("%d:%s=%d", g.Priority, g.Locality, g.Weight))
	}
	return out
}

func TestAssignFailover(t *testing.T) {
	withOD := func(p Policy) Policy { p.OutlierDetection = true; return p }
	tests := []struct {
		name      string
		policy    Policy
		client    string
		endpoints []string
		want      []string
	}{{
		// Istio's failover task: client in region1/zone1, failover region1->region2.
		name:      "istio docs failover example",
		policy:    withOD(Policy{Failover: []Failover{{From: "region1", To: "region2"}}}),
		client:    "region1/zone1",
		endpoints: []string{"region1/zone1", "region1/zone2", "region2/zone3", "region3/zone4"},
		want:      []string{"0:region1/zone1=1", "1:region1/zone2=1", "2:region2/zone3=1", "3:region3/zone4=1"},
	}, {
		name:      "every locality relation",
		policy:    withOD(Policy{Failover: []Failover{{From: "r1", To: "r2"}}}),
		client:    "r1/z1/s1",
		endpoints: []string{"r1/z1/s1", "r1/z1/s2", "r1/z2/s1", "r2/z1/s1", "r3/z1/s1"},
		want:      []string{"0:r1/z1/s1=1", "1:r1/z1/s2=1", "2:r1/z2/s1=1", "3:r2/z1/s1=1", "4:r3/z1/s1=1"},
	}, {
		name:      "no failover rule for the client's region: other regions share a priority",
		policy:    withOD(Policy{Failover: []Failover{{From: "r9", To: "r2"}}}),
		client:    "r1/z1",
		endpoints: []string{"r1/z1", "r2/z1", "r3/z1"},
		want:      []string{"0:r1/z1=1", "1:r2/z1=1", "1:r3/z1=1"},
	}, {
		name:      "empty priorities are compacted away",
		policy:    withOD(Policy{}),
		client:    "r1/z1",
		endpoints: []string{"r1/z1", "r2/z1", "r2/z1"},
		want:      []string{"0:r1/z1=1", "1:r2/z1=2"},
	}, {
		name:      "no endpoint in the client's locality",
		policy:    withOD(Policy{}),
		client:    "r1/z1",
		endpoints: []string{"r1/z2", "r2/z1"},
		want:      []string{"0:r1/z2=1", "1:r2/z1=1"},
	}, {
		name:      "endpoints with no locality are kept, as another region",
		policy:    withOD(Policy{Failover: []Failover{{From: "r1", To: "r2"}}}),
		client:    "r1/z1",
		endpoints: []string{"r1/z1", "", "r2/z1"},
		want:      []string{"0:r1/z1=1", "1:r2/z1=1", "2:=1"},
	}, {
		name:      "without outlierDetection failover is inactive (Istio)",
		policy:    Policy{Failover: []Failover{{From: "r1", To: "r2"}}},
		client:    "r1/z1",
		endpoints: []string{"r1/z1", "r2/z1", "r3/z1"},
		want:      []string{"0:r1/z1=1", "0:r2/z1=1", "0:r3/z1=1"},
	}, {
		name:      "disabled",
		policy:    withOD(Policy{Disabled: true}),
		client:    "r1/z1",
		endpoints: []string{"r1/z1", "r2/z1"},
		want:      []string{"0:r1/z1=1", "0:r2/z1=1"},
	}, {
		name:      "default policy keeps one priority",
		policy:    DefaultPolicy(),
		client:    "r1/z1",
		endpoints: []string{"r1/z1", "r2/z1"},
		want:      []string{"0:r1/z1=1", "0:r2/z1=1"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assign(tt.policy, Client{Locality: loc(t, tt.client)}, eps(t, tt.endpoints...))
			if diff := cmp.Diff(tt.want, summary(got)); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
			checkInvariants(t, got, len(tt.endpoints))
		})
	}
}

func TestAssignFailoverPriority(t *testing.T) {
	labelled := func(addr, l, network string, labels map[string]string) Endpoint {
		return Endpoint{Address: addr, Port: 80, Locality: loc(t, l), Network: network, Labels: labels, Health: registrypb.Health_HEALTHY}
	}
	topology := []PriorityLabel{{Key: LabelNetwork}, {Key: LabelRegion}, {Key: LabelZone}, {Key: LabelSubzone}}
	tests := []struct {
		name      string
		labels    []PriorityLabel
		failover  []Failover
		client    Client
		endpoints []Endpoint
		want      map[string]uint32 // address -> priority
	}{{
		name:   "label keys compared with the client's values",
		labels: []PriorityLabel{{Key: "version"}, {Key: "env"}},
		client: Client{Locality: loc(t, "r1/z1"), Labels: map[string]string{"version": "v1", "env": "prod"}},
		endpoints: []Endpoint{
			labelled("10.0.0.1", "r1/z1", "", map[string]string{"version": "v1", "env": "prod"}),
			labelled("10.0.0.2", "r1/z1", "", map[string]string{"version": "v1", "env": "dev"}),
			labelled("10.0.0.3", "r1/z1", "", map[string]string{"version": "v2", "env": "prod"}),
		},
		want: map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2},
	}, {
		name:   "key=value compares with the given value",
		labels: []PriorityLabel{{Key: "version", Value: "v2", HasValue: true}},
		client: Client{Labels: map[string]string{"version": "v1"}},
		endpoints: []Endpoint{
			labelled("10.0.0.1", "r1/z1", "", map[string]string{"version": "v1"}),
			labelled("10.0.0.2", "r1/z1", "", map[string]string{"version": "v2"}),
		},
		want: map[string]uint32{"10.0.0.2": 0, "10.0.0.1": 1},
	}, {
		name:   "topology labels come from locality and network; a network mismatch adds n",
		labels: topology,
		client: Client{Locality: loc(t, "r1/z1/s1"), Network: "n1"},
		endpoints: []Endpoint{
			labelled("10.0.0.1", "r1/z1/s1", "n1", nil),
			labelled("10.0.0.2", "r1/z1/s2", "n1", nil),
			labelled("10.0.0.3", "r1/z2/s1", "n1", nil),
			labelled("10.0.0.4", "r2/z1/s1", "n1", nil),
			labelled("10.0.0.5", "r1/z1/s1", "n2", nil),
			labelled("10.0.0.6", "r2/z1/s1", "n2", nil),
		},
		// raw 0,1,2,3 on n1 and 4+0, 4+3 on n2, compacted
		want: map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2, "10.0.0.4": 3, "10.0.0.5": 4, "10.0.0.6": 5},
	}, {
		name:     "failover applies on top of failoverPriority",
		labels:   []PriorityLabel{{Key: "version"}},
		failover: []Failover{{From: "r1", To: "r2"}},
		client:   Client{Locality: loc(t, "r1/z1"), Labels: map[string]string{"version": "v1"}},
		endpoints: []Endpoint{
			labelled("10.0.0.1", "r1/z1", "", map[string]string{"version": "v1"}),
			labelled("10.0.0.2", "r2/z1", "", map[string]string{"version": "v1"}),
			labelled("10.0.0.3", "r1/z1", "", map[string]string{"version": "v2"}),
			labelled("10.0.0.4", "r3/z1", "", map[string]string{"version": "v2"}),
		},
		// 0*5+0, 0*5+3, 1*5+0, 1*5+4
		want: map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2, "10.0.0.4": 3},
	}, {
		name:   "one locality split into two priorities keeps per-split weights",
		labels: []PriorityLabel{{Key: "version"}},
		client: Client{Labels: map[string]string{"version": "v1"}},
		endpoints: []Endpoint{
			labelled("10.0.0.1", "r1/z1", "", map[string]string{"version": "v1"}),
			labelled("10.0.0.2", "r1/z1", "", map[string]string{"version": "v2"}),
			labelled("10.0.0.3", "r1/z1", "", map[string]string{"version": "v2"}),
		},
		want: map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policy := Policy{OutlierDetection: true, FailoverPriority: tt.labels, Failover: tt.failover}
			got := Assign(policy, tt.client, tt.endpoints)
			prio := make(map[string]uint32)
			for _, g := range got.Groups {
				var sum uint32
				for _, e := range g.Endpoints {
					prio[e.Address] = g.Priority
					sum += e.Weight
				}
				if g.Weight != sum {
					t.Errorf("group %s/P%d weight %d, want the sum of its endpoints %d", g.Locality, g.Priority, g.Weight, sum)
				}
			}
			if diff := cmp.Diff(tt.want, prio); diff != "" {
				t.Errorf("priorities (-want +got):\n%s", diff)
			}
			checkInvariants(t, got, len(tt.endpoints))
		})
	}
}

func TestAssignDistribute(t *testing.T) {
	pattern := func(s string) Pattern {
		p, err := ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	rule := func(from string, to ...any) Distribute {
		d := Distribute{From: pattern(from)}
		for i := 0; i < len(to); i += 2 {
			d.To = append(d.To, Target{Pattern: pattern(to[i].(string)), Weight: uint32(to[i+1].(int))})
		}
		return d
	}
	tests := []struct {
		name      string
		rules     []Distribute
		client    string
		endpoints []string
		want      []string
		warning   string
	}{{
		// The DestinationRule reference example.
		name: "istio docs example, client in zone1",
		rules: []Distribute{
			rule("us-west/zone1/*", "us-west/zone1/*", 80, "us-west/zone2/*", 20),
			rule("us-west/zone2/*", "us-west/zone1/*", 20, "us-west/zone2/*", 80),
		},
		client:    "us-west/zone1/a",
		endpoints: []string{"us-west/zone1/a", "us-west/zone1/a", "us-west/zone2/b"},
		want:      []string{"0:us-west/zone1/a=80", "0:us-west/zone2/b=20"},
	}, {
		name: "istio docs example, client in zone2",
		rules: []Distribute{
			rule("us-west/zone1/*", "us-west/zone1/*", 80, "us-west/zone2/*", 20),
			rule("us-west/zone2/*", "us-west/zone1/*", 20, "us-west/zone2/*", 80),
		},
		client:    "us-west/zone2/b",
		endpoints: []string{"us-west/zone1/a", "us-west/zone2/b"},
		want:      []string{"0:us-west/zone1/a=20", "0:us-west/zone2/b=80"},
	}, {
		name:      "a wildcard spreads its weight by group weight, rounded up",
		rules:     []Distribute{rule("*", "us-west/*", 60, "us-east/*", 40)},
		client:    "us-west/zone1",
		endpoints: []string{"us-west/zone1", "us-west/zone1", "us-west/zone2", "us-east/zone1"},
		want:      []string{"0:us-east/zone1=40", "0:us-west/zone1=40", "0:us-west/zone2=20"},
	}, {
		name:      "localities no to matches are dropped, as in Istio, with a warning",
		rules:     []Distribute{rule("us-west/*", "us-west/zone1/*", 100)},
		client:    "us-west/zone1",
		endpoints: []string{"us-west/zone1", "us-west/zone2", ""},
		want:      []string{"0:us-west/zone1=100"},
		warning:   "send no traffic to (no locality) (1 endpoints), us-west/zone2 (1 endpoints)",
	}, {
		name:      "no matching from: weights unchanged",
		rules:     []Distribute{rule("eu/*", "eu/*", 100)},
		client:    "us-west/zone1",
		endpoints: []string{"us-west/zone1", "us-west/zone2"},
		want:      []string{"0:us-west/zone1=1", "0:us-west/zone2=1"},
	}, {
		name:      "a rule that would drop everything drops nothing",
		rules:     []Distribute{rule("*", "eu/*", 100)},
		client:    "us-west/zone1",
		endpoints: []string{"us-west/zone1", "us-west/zone2"},
		want:      []string{"0:us-west/zone1=1", "0:us-west/zone2=1"},
		warning:   "every endpoint is kept",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assign(Policy{Distribute: tt.rules}, Client{Locality: loc(t, tt.client)}, eps(t, tt.endpoints...))
			if diff := cmp.Diff(tt.want, summary(got)); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
			if !got.LocalityWeighted {
				t.Error("LocalityWeighted is false; Envoy would ignore the distribute weights")
			}
			if tt.warning == "" && len(got.Warnings) > 0 {
				t.Errorf("unexpected warnings: %v", got.Warnings)
			}
			if tt.warning != "" && !hasWarning(got.Warnings, tt.warning) {
				t.Errorf("warnings %v do not mention %q", got.Warnings, tt.warning)
			}
			if len(got.Groups) == 0 {
				t.Fatal("empty endpoint set")
			}
		})
	}
}

func TestAssignRepeatedAddressKeptOnceAtBestPriority(t *testing.T) {
	in := eps(t, "r2/z1", "r1/z1")
	in = append(in, Endpoint{Address: "10.0.0.1", Port: 80, Locality: loc(t, "r1/z1")}) // repeats r2's address
	got := Assign(Policy{OutlierDetection: true}, Client{Locality: loc(t, "r1/z1")}, in)
	// r2's only endpoint repeats an address already used at priority 0, so
	// r2 disappears rather than listing it twice.
	if diff := cmp.Diff([]string{"0:r1/z1=2"}, summary(got)); diff != "" {
		t.Fatalf("groups (-want +got):\n%s", diff)
	}
	if !hasWarning(got.Warnings, "10.0.0.1:80 is listed more than once") {
		t.Errorf("warnings %v do not report the repeated address", got.Warnings)
	}
	checkInvariants(t, got, 2)
}

func hasWarning(ws []Warning, substr string) bool {
	for _, w := range ws {
		if strings.Contains(w.String(), substr) {
			return true
		}
	}
	return false
}

// checkInvariants asserts what Envoy and gRPC require of any assignment.
func checkInvariants(t *testing.T, p Priorities, minEndpoints int) {
	t.Helper()
	seen := make(map[string]bool)
	type key struct {
		prio uint32
		loc  Locality
	}
	groups := make(map[key]bool)
	var prev uint32
	n := 0
	for i, g := range p.Groups {
		if i == 0 && g.Priority != 0 || i > 0 && g.Priority != prev && g.Priority != prev+1 {
			t.Fatalf("priorities not contiguous from 0: %v", summary(p))
		}
		prev = g.Priority
		if g.Weight == 0 || len(g.Endpoints) == 0 {
			t.Fatalf("group %d has weight %d and %d endpoints", i, g.Weight, len(g.Endpoints))
		}
		if groups[key{g.Priority, g.Locality}] {
			t.Fatalf("locality %s twice at priority %d", g.Locality, g.Priority)
		}
		groups[key{g.Priority, g.Locality}] = true
		for _, e := range g.Endpoints {
			if seen[e.HostPort()] {
				t.Fatalf("address %s repeated", e.HostPort())
			}
			seen[e.HostPort()] = true
			n++
		}
	}
	if n < minEndpoints {
		t.Fatalf("%d endpoints out, want at least %d", n, minEndpoints)
	}
}
