package gossip_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
)

// Three clusters behind their gateways: each advertises its gateway for
// the federation API and gossip, so members know each other only at
// gateway addresses. Gossip crosses the gateways, and with the hub down a
// change in east reaches the others by gossip and peer fetch through them.
func TestIntegrationFederationThroughGateways(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tm := newTestMesh(t, testTimers)
	names := []string{"east", "west", "central"}
	members := map[string]*testMember{}
	gateways := map[string]*eastwest.Gateway{}
	gatewayAddr := map[string]string{}
	for _, name := range names {
		tm.join(name)
		lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		gatewayAddr[name] = lis.Addr().String()
		config := xds.NewServer(ctx, tm.log)
		m := tm.startMemberWith(name, func(c *MemberConfig) {
			c.Advertise, c.Gossip.Advertise = lis.Addr().String(), lis.Addr().String()
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
		gateways[name], _ = tm.startGateway(ctx, m, lis)
		members[name] = m
	}
	for _, name := range names {
		members[name].update(t, coffeeService(name, "svc-"+name, 1, 18080))
	}
	// Every member sees every other alive at its gateway's address.
	eventually(t, 30*time.Second, "gossip membership at gateway addresses", func() bool {
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

	tm.stopHub()
	members["east"].update(t, coffeeService("east", "svc-east", 3, 18080))
	want := members["east"].member.Version("east")
	eventually(t, 30*time.Second, "east's change at west and central without the hub", func() bool {
		return registry.Compare(members["west"].member.Version("east"), want) == 0 &&
			registry.Compare(members["central"].member.Version("east"), want) == 0
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

// testTransport starts a gossip transport for id, issued by ca.
func testTransport(t *testing.T, ca *trust.CA, id spiffeid.ID) *tlsTransport {
	t.Helper()
	cred := issue(t, ca, id)
	bundle := trust.Bundle(id.TrustDomain(), ca.Cert)
	tr, err := newTLSTransport("127.0.0.1:0", "",
		trust.MTLSServer(cred, bundle, authorizeGossip(id.TrustDomain()), nil),
		trust.MTLSClient(cred, bundle, authorizeGossip(id.TrustDomain()), nil), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr
}

func issue(t *testing.T, ca *trust.CA, id spiffeid.ID) *trust.Credential {
	t.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(id, key.Public(), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := trust.NewCredential([]*x509.Certificate{cert, ca.Cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// Packets and streams cross between two members; the packet connection is
// kept for the next packet and replaced when the peer drops it.
func TestTLSTransportCarriesPacketsAndStreams(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := testTransport(t, ca, ClusterID(td, "east"))
	b := testTransport(t, ca, HubID(td))
	to := memberlist.Address{Addr: b.Addr().String(), Name: "hub-0a0b0c"}
	for i := range 3 {
		if _, err := a.WriteToAddress([]byte{byte(i), 'x'}, to); err != nil {
			t.Fatal(err)
		}
		p := recvPacket(t, b)
		if p.Buf[0] != byte(i) || string(p.Buf[1:]) != "x" {
			t.Fatalf("packet %d arrived as %q", i, p.Buf)
		}
	}
	a.mu.Lock()
	senders := len(a.senders)
	a.mu.Unlock()
	if senders != 1 {
		t.Errorf("%d packet connections for one peer, want 1", senders)
	}
	// The receiver drops every inbound connection; the next packet redials.
	b.mu.Lock()
	for c := range b.inbound {
		c.Close()
	}
	b.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if _, err := a.WriteToAddress([]byte("after"), to); err != nil {
		// The first write may land in the dead socket's buffer; a second
		// one must get through on a new connection.
		t.Fatal(err)
	}
	if _, err := a.WriteToAddress([]byte("again"), to); err != nil {
		t.Fatal(err)
	}
	for got := recvPacket(t, b); string(got.Buf) != "again"; got = recvPacket(t, b) {
	}

	c, err := a.DialAddressTimeout(to, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("stream")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-b.StreamCh():
		defer s.Close()
		buf := make([]byte, 6)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "stream" {
			t.Fatalf("stream read %q, %v", buf, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no stream arrived")
	}
}

// Bad input: a peer outside the mesh, a workload of the mesh, plain text,
// an unknown kind and an oversized frame get nothing to memberlist.
func TestTLSTransportRefuses(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := testTransport(t, ca, ClusterID(td, "west"))
	addr := b.Addr().String()

	other := spiffeid.RequireTrustDomainFromString("elsewhere")
	otherCA, err := trust.NewCA(other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	outsider := testTransport(t, otherCA, ClusterID(other, "east"))
	if _, err := outsider.WriteToAddress([]byte("hi"), memberlist.Address{Addr: addr}); err == nil {
		t.Error("a member of another trust domain sent a packet")
	}
	admin := testTransport(t, ca, AdminID(td))
	if _, err := admin.DialAddressTimeout(memberlist.Address{Addr: addr}, time.Second); err != nil {
		// The client learns of the refusal on its first read at the latest.
		t.Log(err)
	}
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	plain.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := io.ReadAll(plain); err != nil {
		t.Log(err)
	}
	plain.Close()

	member := issue(t, ca, ClusterID(td, "east"))
	conf := tlsconfig.MTLSClientConfig(member, trust.Bundle(td, ca.Cert), tlsconfig.AuthorizeAny())
	for _, first := range [][]byte{{'?'}, append([]byte{connPackets}, binary.BigEndian.AppendUint32(nil, maxGossipPacket+1)...)} {
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(first)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("after %q the connection stayed open", first)
		}
		c.Close()
	}
	select {
	case p := <-b.PacketCh():
		t.Fatalf("a refused peer delivered a packet: %q", p.Buf)
	case s := <-b.StreamCh():
		t.Fatalf("a refused peer opened a stream from %s", s.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
}

func recvPacket(t *testing.T, tr *tlsTransport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet arrived")
		return nil
	}
}
