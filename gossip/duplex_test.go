package gossip_test

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
)

// A member sends its packets to a peer back on the connection the peer
// dialed, and reads what comes back on its own: a pair of members holds
// one connection, not one each way.
func TestPacketsTravelBackOnTheConnectionThePeerDialed(t *testing.T) {
	t.Parallel()
	east, west, toEast, toWest := eastAndWest(t)

	if _, err := east.WriteToAddress([]byte("to west"), toWest); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, west); string(p.Buf) != "to west" {
		t.Fatalf("west got %q", p.Buf)
	}
	for i := range 3 {
		if _, err := west.WriteToAddress([]byte{'e', byte(i)}, toEast); err != nil {
			t.Fatal(err)
		}
		if p := recvPacket(t, east); p.Buf[0] != 'e' || p.Buf[1] != byte(i) {
			t.Fatalf("east got %q", p.Buf)
		}
	}
	if open := west.Stats().Open; open["east"] != 1 {
		t.Errorf("west holds %d connections with east, want the 1 east dialed", open["east"])
	}
	if open := east.Stats().Open; open["west"] != 1 {
		t.Errorf("east holds %d connections with west, want the 1 it dialed", open["west"])
	}

	// When east's connection goes, west's next packets to east dial anew.
	east.DropSenders()
	fedtest.Eventually(t, 5*time.Second, "west to lose east's connection", func() bool { return west.Stats().Open["east"] == 0 })
	fedtest.Eventually(t, 5*time.Second, "west's packet to reach east again", func() bool {
		if _, err := west.WriteToAddress([]byte("again"), toEast); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-east.PacketCh():
			return string(p.Buf) == "again"
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
}

// Two members that dial each other at once end up on one connection, the
// one the lesser node name dialed, and packets still cross both ways.
func TestMembersDialingEachOtherKeepOneConnection(t *testing.T) {
	t.Parallel()
	east, west, toEast, toWest := eastAndWest(t)

	for i := range 20 {
		if _, err := east.WriteToAddress([]byte{'w', byte(i)}, toWest); err != nil {
			t.Fatal(err)
		}
		if _, err := west.WriteToAddress([]byte{'e', byte(i)}, toEast); err != nil {
			t.Fatal(err)
		}
	}
	recvPacket(t, west)
	recvPacket(t, east)
	fedtest.Eventually(t, 5*time.Second, "one connection between east and west", func() bool {
		return east.Stats().Open["west"] == 1 && west.Stats().Open["east"] == 1
	})
	drain := func(tr interface {
		PacketCh() <-chan *memberlist.Packet
	}) {
		for {
			select {
			case <-tr.PacketCh():
			default:
				return
			}
		}
	}
	drain(east)
	drain(west)
	if _, err := east.WriteToAddress([]byte("w-last"), toWest); err != nil {
		t.Fatal(err)
	}
	if _, err := west.WriteToAddress([]byte("e-last"), toEast); err != nil {
		t.Fatal(err)
	}
	for got := recvPacket(t, west); string(got.Buf) != "w-last"; got = recvPacket(t, west) {
	}
	for got := recvPacket(t, east); string(got.Buf) != "e-last"; got = recvPacket(t, east) {
	}
}

// A member of an earlier version offers no ALPN and never reads what
// comes back on the connection it dialed: packets to it go on a
// connection of their own, as before.
func TestPacketsToAMemberWithoutDuplexGoOnTheirOwnConnection(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	west := testTransport(t, ca, membership.ClusterID(td, "west"))
	centralCred := issue(t, ca, membership.ClusterID(td, "central"))
	central := startTransport(t, centralCred, ca, func(*gossip.TransportConfig) {})

	// An older central dials west without ALPN and sends one packet.
	old := rawDial(t, centralCred, ca, west.Addr().String(), append(gossip.Preamble(gossip.ConnPackets, "central-0a0b0c"), frame([]byte("from old"))...))
	if p := recvPacket(t, west); string(p.Buf) != "from old" {
		t.Fatalf("west got %q", p.Buf)
	}
	if _, err := west.WriteToAddress([]byte("to central"), memberlist.Address{Addr: central.Addr().String(), Name: "central-0a0b0c"}); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, central); string(p.Buf) != "to central" {
		t.Fatalf("central got %q", p.Buf)
	}
	if open := west.Stats().Open; open["central"] != 2 {
		t.Errorf("west holds %d connections with central, want 2: the older one's and its own", open["central"])
	}
	old.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := old.Read(make([]byte, 1)); n > 0 || !isTimeout(err) {
		t.Errorf("west wrote back on a connection without duplex: %d bytes, %v", n, err)
	}
}

// eastAndWest starts two members' transports under one CA, and returns
// them with the address of each.
func eastAndWest(t *testing.T) (east, west *gossip.Transport, toEast, toWest memberlist.Address) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	east = testTransport(t, ca, membership.ClusterID(td, "east"))
	west = testTransport(t, ca, membership.ClusterID(td, "west"))
	toEast = memberlist.Address{Addr: east.Addr().String(), Name: "east-0a0b0c"}
	toWest = memberlist.Address{Addr: west.Addr().String(), Name: "west-0a0b0c"}
	return east, west, toEast, toWest
}
