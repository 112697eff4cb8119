package routing_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// Bad input in DestinationRules shows in status, never as a crash or an
// empty endpoint set: a failover to a region no endpoint is in, a
// failoverPriority label no endpoint carries, then a file with weights not
// summing to 100 and one with an unparsable locality (the rules loaded
// before stay in force).
func TestIntegrationRoutingWarningsInStatus(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("west")
	dir := t.TempDir()
	write := func(name, yaml string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A ServiceEntry in the same directory is not a DestinationRule.
	write("order.yaml", `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: order, namespace: shop}
spec: {hosts: [order.shop.svc.cluster.local]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: shop}
spec:
  host: order
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: mars}], failoverPriority: [example.com/rack]}}
    outlierDetection: {consecutive5xxErrors: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ghost, namespace: shop}
spec: {host: ghost.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}}}
`)
	loc := &registry.Locality{Region: "r1", Zone: "z1"}
	order := &registry.Service{
		Hostname: "order.shop.svc.cluster.local", Namespace: "shop", Name: "order",
		Ports: []*registry.Port{{Name: "grpc", Number: 9090}},
		Endpoints: []*registry.Endpoint{
			{Address: "10.0.0.1", Ports: map[string]uint32{"grpc": 9090}, Network: "net-west", Locality: loc, Health: registrypb.Health_HEALTHY},
			{Address: "10.0.0.2", Ports: map[string]uint32{"grpc": 9090}, Network: "net-west", Locality: &registry.Locality{Region: "r1", Zone: "z2"}, Health: registrypb.Health_HEALTHY},
		},
	}
	west := tm.StartControlPlane("west", controlplane.Config{
		Locality: loc, ConfigDir: dir, RulesInterval: 50 * time.Millisecond, Source: fedtest.NewSource(order),
	})
	m, routing := west.Member(), west.Routing()

	warns := func(parts ...string) func() bool {
		return func() bool {
			for _, w := range m.StatusNow().GetPolicyWarnings() {
				text := w.GetRule() + " " + w.GetHost() + " " + w.GetField() + " " + w.GetMessage()
				all := true
				for _, p := range parts {
					all = all && strings.Contains(text, p)
				}
				if all {
					return true
				}
			}
			return false
		}
	}
	fedtest.Eventually(t, 10*time.Second, "a warning about failover to mars", warns("shop/order", "failover[0]", `no endpoint is in region "mars"`, "known regions: r1"))
	fedtest.Eventually(t, 10*time.Second, "a warning about the rack label", warns("shop/order", "failoverPriority[0]", `no endpoint carries label "example.com/rack"`))
	fedtest.Eventually(t, 10*time.Second, "a warning about the rule for no service", warns("shop/ghost", "matches no service"))
	fedtest.Eventually(t, 10*time.Second, "a warning about failover without outlierDetection", warns("shop/ghost", "inactive without outlierDetection"))
	endpoints := func() int {
		n := 0
		for _, g := range routing.Clients().Priorities[xds.ClusterName(9090, "", order.Hostname)].Groups {
			n += len(g.Endpoints)
		}
		return n
	}
	if n := endpoints(); n != 2 {
		t.Fatalf("clients see %d endpoints of order, want 2", n)
	}

	for _, bad := range []struct{ yaml, want string }{
		{`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split, namespace: shop}
spec: {host: order, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: "r1/*", to: {"r1/z1/*": 70, "r1/z2/*": 20}}]}}}}
`, "weights sum to 90, not 100"},
		{`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split, namespace: shop}
spec: {host: order, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: "r1//z1", to: {"r1/*": 100}}]}}}}
`, `"r1//z1": has an empty part`},
	} {
		write("split.yaml", bad.yaml)
		fedtest.Eventually(t, 10*time.Second, "a load error: "+bad.want, warns("split.yaml", bad.want, "loaded before stay in force"))
		if !warns("shop/order", "failover[0]")() {
			t.Errorf("after %q, the rules loaded before are gone from status", bad.want)
		}
		if n := endpoints(); n != 2 {
			t.Fatalf("after %q, clients see %d endpoints of order, want 2", bad.want, n)
		}
	}
}

// A DestinationRule written after the start changes the policy VM agents
// get, and wakes their sessions through the member's Changed channel.
func TestAgentPolicyFollowsRuleChanges(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("west")
	dir := t.TempDir()
	west := tm.StartControlPlane("west", controlplane.Config{
		ConfigDir: dir, RulesInterval: 50 * time.Millisecond, Source: fedtest.NewSource(fedtest.CoffeeService("west", "payment", 1, 18081)),
	})
	m, routing := west.Member(), west.Routing()
	host := fedtest.CoffeeService("west", "payment", 1, 18081).GetHostname()
	fedtest.Eventually(t, 10*time.Second, "routing built", func() bool { return routing.Clients() != nil })
	if p := routing.AgentPolicy(host, 8080); len(p.Failover) != 0 {
		t.Fatalf("failover before any rule: %+v", p.Failover)
	}
	woken := m.Changed()
	rule := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: payment, namespace: shop}\n" +
		"spec:\n  host: " + host + "\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}\n" +
		"    outlierDetection: {consecutive5xxErrors: 1}\n"
	if err := os.WriteFile(filepath.Join(dir, "payment.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the rule change did not wake the member's watchers")
	}
	fedtest.Eventually(t, 10*time.Second, "the agents' policy with the rule's failover", func() bool {
		p := routing.AgentPolicy(host, 8080)
		return len(p.Failover) == 1 && p.OutlierDetection
	})
}
