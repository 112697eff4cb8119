package member_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/eastwest/xds"
)

// Control planes start before their gateways (the gateway's first SVID
// comes from its control plane), so each joins gossip at a loopback
// gateway address nothing listens on yet: what the hub gossips to it
// meanwhile, such as the members that join after it, is lost. Once the
// gateways route, every member must see every other within seconds, not
// at the next push/pull half a minute later.
func TestGossipConvergesWhenGatewaysStartLate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tm := newTestMesh(t, testTimers)
	names := []string{"east", "west", "central"}
	members := map[string]*testMember{}
	gatewayAddr := map[string]string{}
	for _, name := range names {
		tm.join(name)
		gatewayAddr[name] = freeAddr(t) // not listening until the gateway starts
		config := xds.NewServer(ctx, tm.log)
		m := tm.startMemberWith(name, func(c *MemberConfig) {
			c.Advertise, c.Gossip.Advertise = gatewayAddr[name], gatewayAddr[name]
			c.RegisterServices = config.Register
		})
		snap, err := xds.Build(xds.Input{Version: "1", Network: "net-" + name, Cluster: name, Internal: map[sni.Component]string{
			sni.ControlPlane: m.member.Addr(), sni.Gossip: m.member.GossipListenAddr(),
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := config.Update(ctx, snap); err != nil {
			t.Fatal(err)
		}
		members[name] = m
	}
	// Every member has joined the hub, which has tried to tell the others.
	eventually(t, 10*time.Second, "the hub's gossip view", func() bool {
		return len(tm.hub.gossip.Members()) == len(names)
	})
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
		tm.startGateway(ctx, members[name], lis)
	}
	start := time.Now()
	eventually(t, 3*time.Second, "every member to see every other at its gateway's address", func() bool {
		for _, viewer := range names {
			seen := map[string]string{}
			for _, ms := range members[viewer].member.gossip.Members() {
				seen[ms.Cluster] = ms.Addr
			}
			for _, other := range names {
				if other != viewer && seen[other] != gatewayAddr[other] {
					return false
				}
			}
		}
		return true
	})
	t.Logf("converged %s after the last gateway started", time.Since(start).Round(time.Millisecond))
}
