package locality

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func dr(lb string, extra ...string) string {
	s := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec:\n  host: reviews.shop.svc.cluster.local\n  trafficPolicy:\n"
	if lb != "" {
		s += "    loadBalancer:\n      localityLbSetting:\n" + indent(lb, "        ")
	}
	for _, e := range extra {
		s += indent(e, "    ")
	}
	return s
}

func indent(s, by string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(by + l + "\n")
	}
	return b.String()
}

const outlier = "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}"

func TestParseDestinationRules(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		want     Policy
		warnings []string
	}{{
		name: "failover with outlierDetection (Istio's failover task)",
		yaml: dr("enabled: true\nfailover:\n- {from: region1, to: region2}", outlier),
		want: Policy{Failover: []Failover{{From: "region1", To: "region2"}}, OutlierDetection: true, PanicThreshold: 0},
	}, {
		name:     "failover without outlierDetection is inactive",
		yaml:     dr("failover:\n- {from: us-east, to: eu-west}\n- {from: us-west, to: us-east}"),
		want:     Policy{Failover: []Failover{{From: "us-east", To: "eu-west"}, {From: "us-west", To: "us-east"}}, PanicThreshold: DefaultPanicThreshold},
		warnings: []string{"inactive without outlierDetection"},
	}, {
		name: "distribute (the API reference example)",
		yaml: dr(`distribute:
- from: us-west/zone1/*
  to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
- from: us-west/zone2/*
  to: {"us-west/zone1/*": 20, "us-west/zone2/*": 80}`),
		want: Policy{PanicThreshold: DefaultPanicThreshold, Distribute: []Distribute{
			{From: Pattern{Region: "us-west", Zone: "zone1", Subzone: "*", text: "us-west/zone1/*"}, To: []Target{
				{Pattern: Pattern{Region: "us-west", Zone: "zone1", Subzone: "*", text: "us-west/zone1/*"}, Weight: 80},
				{Pattern: Pattern{Region: "us-west", Zone: "zone2", Subzone: "*", text: "us-west/zone2/*"}, Weight: 20}}},
			{From: Pattern{Region: "us-west", Zone: "zone2", Subzone: "*", text: "us-west/zone2/*"}, To: []Target{
				{Pattern: Pattern{Region: "us-west", Zone: "zone1", Subzone: "*", text: "us-west/zone1/*"}, Weight: 20},
				{Pattern: Pattern{Region: "us-west", Zone: "zone2", Subzone: "*", text: "us-west/zone2/*"}, Weight: 80}}},
		}},
	}, {
		name: "failoverPriority with values and minHealthPercent",
		yaml: dr("failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, version=v1]",
			"outlierDetection: {consecutive5xxErrors: 2, minHealthPercent: 30}"),
		want: Policy{OutlierDetection: true, PanicThreshold: 30, FailoverPriority: []PriorityLabel{
			{Key: LabelNetwork}, {Key: LabelRegion}, {Key: "version", Value: "v1", HasValue: true}}},
	}, {
		name:     "outlierDetection alone turns on locality failover",
		yaml:     dr("", outlier),
		want:     Policy{OutlierDetection: true},
		warnings: []string{"outlierDetection also turns on locality failover"},
	}, {
		name:     "disabled with settings",
		yaml:     dr("enabled: false\nfailover: [{from: a, to: b}]", outlier),
		want:     Policy{Disabled: true, OutlierDetection: true, Failover: []Failover{{From: "a", To: "b"}}},
		warnings: []string{"enabled is false"},
	}, {
		name:     "distribute wins over failoverPriority",
		yaml:     dr("distribute: [{from: '*', to: {'a/*': 100}}]\nfailoverPriority: [version]", outlier),
		want:     Policy{OutlierDetection: true, Distribute: []Distribute{{From: Pattern{Region: "*", text: "*"}, To: []Target{{Pattern: Pattern{Region: "a", Zone: "*", text: "a/*"}, Weight: 100}}}}, FailoverPriority: []PriorityLabel{{Key: "version"}}},
		warnings: []string{"failoverPriority: ignored because distribute is set"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := ParseDestinationRules([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) != 1 {
				t.Fatalf("%d rules, want 1", len(rules))
			}
			r := rules[0]
			if r.Ref() != "shop/reviews" || r.Host != "reviews.shop.svc.cluster.local" {
				t.Errorf("rule %s host %s", r.Ref(), r.Host)
			}
			if diff := cmp.Diff(tt.want, r.Policy("", 0), cmp.AllowUnexported(Pattern{})); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			if len(r.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings %v, want %d", r.Warnings, len(tt.warnings))
			}
			for i, w := range tt.warnings {
				if !strings.Contains(r.Warnings[i].String(), w) || !strings.Contains(r.Warnings[i].String(), "shop/reviews") {
					t.Errorf("warning %q does not name the rule and mention %q", r.Warnings[i], w)
				}
			}
		})
	}
}

func TestParseDestinationRulesErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"weights not summing to 100", dr("distribute: [{from: 'a/*', to: {'a/z1/*': 60, 'a/z2/*': 30}}]"), "weights sum to 90, not 100"},
		{"weight out of range", dr("distribute: [{from: 'a/*', to: {'a/z1/*': 0, 'a/z2/*': 100}}]"), "weight 0 must be 1-100"},
		{"unparsable locality pattern", dr("distribute: [{from: 'a/*/z', to: {'a/*': 100}}]"), "'*' must be a whole part and the last one"},
		{"empty locality part", dr("distribute: [{from: 'a//z', to: {'a/*': 100}}]"), "empty part"},
		{"overlapping to", dr("distribute: [{from: '*', to: {'a/*': 50, 'a/z1': 50}}]"), "overlaps"},
		{"overlapping from", dr("distribute: [{from: 'a/*', to: {'a/*': 100}}, {from: 'a/z', to: {'a/*': 100}}]"), "overlaps"},
		{"distribute and failover", dr("distribute: [{from: '*', to: {'a/*': 100}}]\nfailover: [{from: a, to: b}]"), "distribute and failover cannot both be set"},
		{"failover to a zone", dr("failover: [{from: us-east, to: eu-west/zone1}]"), "must be plain regions"},
		{"failover to itself", dr("failover: [{from: a, to: a}]"), "name two different regions"},
		{"failover without to", dr("failover: [{from: a}]"), "must both name a region"},
		{"failover with topology failoverPriority", dr("failover: [{from: a, to: b}]\nfailoverPriority: [topology.kubernetes.io/zone]"), "cannot be combined with failover"},
		{"failoverPriority with two =", dr("failoverPriority: ['a=b=c']"), "more than one '='"},
		{"failoverPriority empty entry", dr("failoverPriority: ['']"), "label name must be 1-63"},
		{"minHealthPercent out of range", dr("", "outlierDetection: {minHealthPercent: 150}"), "outside 0-100"},
		{"unknown field", dr("distribut: []"), "unknown field"},
		{"wrong kind", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {}", `kind "VirtualService" is not DestinationRule`},
		{"wrong apiVersion", "apiVersion: v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: a}", `apiVersion "v1"`},
		{"missing host", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {}", "spec.host is missing"},
		{"missing name", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nspec: {host: a}", "metadata.name is missing"},
		{"bad YAML", "kind: [", "invalid YAML"},
		{"bad duration", dr("", "outlierDetection: {baseEjectionTime: 1x}"), `duration "1x"`},
		{"not an object", "- a\n- b", "not a Kubernetes object"},
		{"second document bad", dr("") + "---\nkind: Nope\n", "document 2"},
		{"bad subset policy", dr("") + "  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}}\n", "spec.subsets[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := ParseDestinationRules([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error; rules %v", rules)
			}
			if !errors.Is(err, ErrInvalidRule) {
				t.Errorf("error %v does not wrap ErrInvalidRule", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestRulePolicyMerging(t *testing.T) {
	yaml := dr("failover: [{from: r1, to: r2}]", outlier,
		"portLevelSettings:\n- port: {number: 8080}\n  loadBalancer: {localityLbSetting: {enabled: false}}") +
		"  subsets:\n  - name: canary\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r3}]}}\n"
	rules, err := ParseDestinationRules([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	r := rules[0]
	if got := r.Policy("", 0); got.Failover[0].To != "r2" || !got.OutlierDetection {
		t.Errorf("top-level policy %+v", got)
	}
	if got := r.Policy("", 8080); !got.Disabled {
		t.Errorf("port 8080 policy %+v, want the port-level override (disabled)", got)
	}
	if got := r.Policy("canary", 0); got.Failover[0].To != "r3" || !got.OutlierDetection {
		t.Errorf("canary policy %+v, want its own failover and the rule's outlierDetection", got)
	}
	if got := r.Policy("unknown", 0); got.Failover[0].To != "r2" {
		t.Errorf("unknown subset policy %+v, want the rule's", got)
	}
}

func TestParseLocality(t *testing.T) {
	good := map[string]Locality{
		"":           {},
		"r":          {Region: "r"},
		"r/z":        {Region: "r", Zone: "z"},
		"us/z/s-1.a": {Region: "us", Zone: "z", Subzone: "s-1.a"},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("Parse(%q) = %+v, %v; String %q", in, got, err, got.String())
		}
		if back := FromProto(got.Proto()); back != got {
			t.Errorf("proto round trip of %q gave %+v", in, back)
		}
	}
	for _, in := range []string{"/", "a//b", "a/b/c/d", "a b", "a/*", "*", "a/\tb", "a/b/"} {
		if _, err := Parse(in); !errors.Is(err, ErrInvalidLocality) {
			t.Errorf("Parse(%q) error %v, want ErrInvalidLocality", in, err)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	l := Locality{Region: "us", Zone: "z1", Subzone: "s1"}
	for pattern, want := range map[string]bool{
		"*": true, "us": true, "us/*": true, "us/z1": true, "us/z1/*": true, "us/z1/s1": true,
		"eu": false, "us/z2": false, "us/z1/s2": false, "eu/*": false,
	} {
		p, err := ParsePattern(pattern)
		if err != nil {
			t.Fatal(err)
		}
		if p.Match(l) != want {
			t.Errorf("%q matches %s: %v, want %v", pattern, l, !want, want)
		}
	}
	// Hierarchical: zone z1 of another region does not match.
	p, _ := ParsePattern("eu/z1")
	if p.Match(Locality{Region: "us", Zone: "z1"}) {
		t.Error("eu/z1 matched us/z1")
	}
}

func TestCheck(t *testing.T) {
	yaml := dr("failover: [{from: r1, to: r9}]\nfailoverPriority: [topology.istio.io/network, version]", outlier) + "---\n" +
		strings.Replace(dr("distribute: [{from: 'r1/*', to: {'r1/z1/*': 70, 'r5/*': 30}}]"), "name: reviews", "name: ratings", 1)
	rules, err := ParseDestinationRules([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := eps(t, "r1/z1", "r1/z2", "r2/z1", "")
	for i := range endpoints {
		endpoints[i].Network = "n1"
	}
	failoverWarnings := rules[0].Check(endpoints)
	for _, want := range []string{
		`shop/reviews: failover[0]: no endpoint is in region "r9"`,
		`failoverPriority[1]: no endpoint carries label "version"`,
	} {
		if !hasWarning(failoverWarnings, want) {
			t.Errorf("warnings %v do not include %q", failoverWarnings, want)
		}
	}
	if hasWarning(failoverWarnings, "failoverPriority[0]") {
		t.Errorf("network label reported missing, but endpoints derive it: %v", failoverWarnings)
	}
	distributeWarnings := rules[1].Check(endpoints)
	for _, want := range []string{
		`shop/ratings: distribute[0]: clients in "r1/*" send no traffic to endpoints with no locality (1), r1/z2 (1), r2/z1 (1)`,
		`distribute[0].to["r5/*"]: matches no endpoint`,
	} {
		if !hasWarning(distributeWarnings, want) {
			t.Errorf("warnings %v do not include %q", distributeWarnings, want)
		}
	}
}

// A config directory mixes kinds: only DestinationRules are read, and a
// broken one still fails with its name.
func TestParseDestinationRulesInSkipsOtherKinds(t *testing.T) {
	mixed := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: order, namespace: shop}
spec: {hosts: [order.shop.svc.cluster.local]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: shop}
spec: {host: order.shop.svc.cluster.local}
`
	rules, err := ParseDestinationRulesIn([]byte(mixed))
	if err != nil || len(rules) != 1 || rules[0].Ref() != "shop/order" {
		t.Fatalf("rules %v, err %v; want shop/order only", rules, err)
	}
	if _, err := ParseDestinationRules([]byte(mixed)); err == nil {
		t.Fatal("ParseDestinationRules accepted a ServiceEntry")
	}
	broken := mixed + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad, namespace: shop}
spec: {host: x, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: "r/*", to: {"r/a/*": 60}}]}}}}
`
	if _, err := ParseDestinationRulesIn([]byte(broken)); err == nil || !strings.Contains(err.Error(), "shop/bad") || !strings.Contains(err.Error(), "sum to 60") {
		t.Fatalf("err %v, want shop/bad's weights named", err)
	}
}
