package gossip_test

import (
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

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// testTransport starts a gossip transport for id, issued by ca, whose
// node is named as id's cluster (or the hub) with a start suffix.
func testTransport(t *testing.T, ca *trust.CA, id spiffeid.ID) *gossip.Transport {
	t.Helper()
	return startTransport(t, issue(t, ca, id), ca, func(c *gossip.TransportConfig) {})
}

// startTransport starts a transport with cred; configure adjusts its
// configuration.
func startTransport(t *testing.T, cred *trust.Credential, ca *trust.CA, configure func(*gossip.TransportConfig)) *gossip.Transport {
	t.Helper()
	td := cred.ID().TrustDomain()
	bundle := trust.Bundle(td, ca.Cert)
	conf := gossip.TransportConfig{
		Server:      trust.MTLSServer(cred, bundle, membership.AuthorizeGossip(td), nil),
		Client:      trust.MTLSClient(cred, bundle, membership.AuthorizeGossip(td), nil),
		Name:        nodeName(td, cred.ID()),
		TrustDomain: td,
		Log:         slog.New(slog.DiscardHandler),
	}
	configure(&conf)
	tr, err := gossip.NewTransport(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr
}

// nodeName is the node name a member with id gossips as.
func nodeName(td spiffeid.TrustDomain, id spiffeid.ID) string {
	if c := membership.ClusterOf(td, id); c != "" {
		return c + "-0a0b0c"
	}
	return "hub-0a0b0c"
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
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := testTransport(t, ca, membership.ClusterID(td, "east"))
	b := testTransport(t, ca, membership.HubID(td))
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
	if senders := a.Senders(); senders != 1 {
		t.Errorf("%d packet connections for one peer, want 1", senders)
	}
	// The receiver drops every inbound connection; the next packet redials.
	b.DropInbound()
	fedtest.Eventually(t, 5*time.Second, "the receiver to drop its connections", func() bool { return b.Inbound() == 0 })
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
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := testTransport(t, ca, membership.ClusterID(td, "west"))
	addr := b.Addr().String()

	other := spiffeid.RequireTrustDomainFromString("elsewhere")
	otherCA, err := trust.NewCA(other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	outsider := testTransport(t, otherCA, membership.ClusterID(other, "east"))
	// Packets are sent from a goroutine of the peer's: the refusal shows
	// as the packet dropped, and none delivered (checked at the end).
	if _, err := outsider.WriteToAddress([]byte("hi"), memberlist.Address{Addr: addr}); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 5*time.Second, "the outsider's packet dropped as refused", func() bool {
		return outsider.Stats().Dropped[gossip.DroppedUnreachable] == 1
	})
	admin := testTransport(t, ca, membership.AdminID(td))
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

	member := issue(t, ca, membership.ClusterID(td, "east"))
	conf := tlsconfig.MTLSClientConfig(member, trust.Bundle(td, ca.Cert), tlsconfig.AuthorizeAny())
	for _, first := range [][]byte{
		{'?'},
		{gossip.LegacyPackets, 0, 0, 0, 1, 'x'}, // an older member, without a node name
		append(gossip.Preamble(gossip.ConnPackets, ""), 0, 0, 0, 1, 'x'), // no node name
		append(gossip.Preamble(gossip.ConnPackets, "east-1a2b3c"), binary.BigEndian.AppendUint32(nil, gossip.MaxGossipPacket+1)...),
	} {
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

func recvPacket(t *testing.T, tr *gossip.Transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet arrived")
		return nil
	}
}
