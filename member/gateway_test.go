package member_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
)

// startBehindGateway starts a joined cluster's member advertising its
// gateway's address for the federation API and gossip, with an xDS server
// that tells the gateway where both are.
func startBehindGateway(ctx context.Context, t *testing.T, tm *fedtest.Mesh, name, gateway string) *fedtest.Member {
	t.Helper()
	config := xds.NewServer(ctx, tm.Logger())
	m := tm.StartMemberWith(name, func(c *member.Config) {
		c.Advertise, c.Gossip.Advertise = gateway, gateway
		c.RegisterServices = config.Register
	})
	snap, err := xds.Build(xds.Input{Version: "1", Network: "net-" + name, Cluster: name, Internal: map[sni.Component]string{
		sni.ControlPlane: m.Member.Addr(), sni.Gossip: m.Member.GossipListenAddr(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := config.Update(ctx, snap); err != nil {
		t.Fatal(err)
	}
	return m
}

// seeEachOtherAt reports whether every member sees every other alive in
// gossip at the address given for it.
func seeEachOtherAt(members map[string]*fedtest.Member, addrs map[string]string) bool {
	for viewer, m := range members {
		seen := map[string]string{}
		for _, ms := range m.Member.GossipMembers() {
			seen[ms.Cluster] = ms.Addr
		}
		for other := range members {
			if other != viewer && seen[other] != addrs[other] {
				return false
			}
		}
	}
	return true
}

// Three clusters behind their gateways: each advertises its gateway for
// the federation API and gossip, so members know each other only at
// gateway addresses. Gossip crosses the gateways, and with the hub down a
// change in east reaches the others by gossip and peer fetch through them.
func TestIntegrationFederationThroughGateways(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tm := newMesh(t, testTimers)
	names := []string{"east", "west", "central"}
	members := map[string]*fedtest.Member{}
	gateways := map[string]*eastwest.Gateway{}
	gatewayAddr := map[string]string{}
	for _, name := range names {
		tm.Join(name)
		lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		gatewayAddr[name] = lis.Addr().String()
		m := startBehindGateway(ctx, t, tm, name, gatewayAddr[name])
		gateways[name], _ = tm.StartMemberGateway(ctx, m, lis)
		members[name] = m
	}
	for _, name := range names {
		members[name].Update(t, fedtest.CoffeeService(name, "svc-"+name, 1, 18080))
	}
	// Every member sees every other alive at its gateway's address.
	fedtest.Eventually(t, 30*time.Second, "gossip membership at gateway addresses", func() bool {
		return seeEachOtherAt(members, gatewayAddr)
	})

	tm.StopHub()
	members["east"].Update(t, fedtest.CoffeeService("east", "svc-east", 3, 18080))
	want := members["east"].Member.Version("east")
	fedtest.Eventually(t, 30*time.Second, "east's change at west and central without the hub", func() bool {
		return registry.Compare(members["west"].Member.Version("east"), want) == 0 &&
			registry.Compare(members["central"].Member.Version("east"), want) == 0
	})
	for _, name := range names {
		st := gateways[name].Stats()
		if st.Relayed == 0 {
			t.Errorf("%s's gateway relayed no connection: %+v", name, st)
		}
		if n := st.Refused[eastwest.RefusedUnknownSNI]; n != 0 {
			t.Errorf("%s's gateway refused %d connections for unknown names", name, n)
		}
	}
}

// Control planes start before their gateways (the gateway's first SVID
// comes from its control plane), so each joins gossip at a loopback
// gateway address nothing listens on yet: what the hub gossips to it
// meanwhile, such as the members that join after it, is lost. Once the
// gateways route, every member must see every other within seconds, not
// at the next push/pull half a minute later.
func TestGossipConvergesWhenGatewaysStartLate(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tm := newMesh(t, testTimers)
	names := []string{"east", "west", "central"}
	members := map[string]*fedtest.Member{}
	gatewayAddr := map[string]string{}
	for _, name := range names {
		tm.Join(name)
		gatewayAddr[name] = testport.Addr(t) // not listening until the gateway starts
		members[name] = startBehindGateway(ctx, t, tm, name, gatewayAddr[name])
	}
	// Every member has joined the hub, which has tried to tell the others.
	hub := newScraper(t, tm.Hub.Collector())
	hub.eventually(10*time.Second, "the hub's gossip view", func(m map[string]float64) bool {
		return m["federate_gossip_members"] == float64(len(names)+1) // the hub counts itself
	})
	// Not a synchronisation: the broadcasts of those joins run out of
	// retransmissions meanwhile, so that the convergence below cannot
	// come from them.
	time.Sleep(time.Second)

	for _, name := range names {
		addr, err := net.ResolveTCPAddr("tcp", gatewayAddr[name])
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.ListenTCP("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		tm.StartMemberGateway(ctx, members[name], lis)
	}
	start := time.Now()
	fedtest.Eventually(t, 3*time.Second, "every member to see every other at its gateway's address", func() bool {
		return seeEachOtherAt(members, gatewayAddr)
	})
	t.Logf("converged %s after the last gateway started", time.Since(start).Round(time.Millisecond))
}
