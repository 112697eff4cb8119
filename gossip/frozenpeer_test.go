package gossip_test

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// A frozen peer (SIGSTOP) keeps its listening socket: the kernel completes
// TCP connections to it and the TLS handshake then waits for the handshake
// timeout. Sending packets to it must return at once, keep a bounded
// queue (the oldest dropped and counted), and hold up no packet to the
// peers that answer, since memberlist sends from its packet handler and
// its gossip loop; and Shutdown must not wait for that dial.
func TestTransportFrozenPeerHoldsNothingUp(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	frozen, err := net.Listen("tcp", "127.0.0.1:0") // accepts in the kernel, never answers TLS
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	a := testTransport(t, ca, membership.ClusterID(td, "east"))
	b := testTransport(t, ca, membership.ClusterID(td, "west"))
	toFrozen := memberlist.Address{Addr: frozen.Addr().String(), Name: "hub-0a0b0c"}
	toB := memberlist.Address{Addr: b.Addr().String(), Name: "west-0a0b0c"}

	// Sent from a goroutine, so that a send that waits fails the test
	// rather than hanging it.
	const sent = 500
	errs := make(chan error, 1)
	go func() {
		for i := range sent {
			if _, err := a.WriteToAddress([]byte{byte(i)}, toFrozen); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	select {
	case err := <-errs:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("500 packets to a frozen peer were not queued within a second: sending waits for the peer")
	}
	// At most one packet is out of the queue, in the goroutine that dials.
	if q := a.Queued(); q > gossip.PacketQueueLen || q < gossip.PacketQueueLen-1 {
		t.Errorf("%d packets wait for the frozen peer, want the queue's %d", q, gossip.PacketQueueLen)
	}
	if d := a.Stats().Dropped[gossip.DroppedQueueFull]; d < sent-gossip.PacketQueueLen-1 {
		t.Errorf("%d packets dropped for a full queue, want at least %d", d, sent-gossip.PacketQueueLen-1)
	}

	for i := range 3 {
		start := time.Now()
		if _, err := a.WriteToAddress([]byte{'w', byte(i)}, toB); err != nil {
			t.Fatal(err)
		}
		if p := recvPacket(t, b); p.Buf[0] != 'w' || p.Buf[1] != byte(i) {
			t.Fatalf("packet %d arrived as %q", i, p.Buf)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("packet %d to a live peer took %s while a frozen one was being dialed", i, took)
		}
	}

	start := time.Now()
	a.Shutdown()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Shutdown took %s while a frozen peer was being dialed", took)
	}
	if _, err := a.WriteToAddress([]byte("late"), toB); err == nil {
		t.Error("a packet was queued after Shutdown")
	}
}

// stalledPeer is a gossip listener with cred that completes the handshake
// and reads the preamble, then reads nothing more: the connection of a
// peer that stopped after it answered.
type stalledPeer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newStalledPeer(t *testing.T, cred *trust.Credential, ca *trust.CA) *stalledPeer {
	t.Helper()
	td := cred.ID().TrustDomain()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", trust.MTLSServer(cred, trust.Bundle(td, ca.Cert), membership.AuthorizeGossip(td), nil))
	if err != nil {
		t.Fatal(err)
	}
	p := &stalledPeer{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Go(func() {
				var hdr [2]byte
				if _, err := io.ReadFull(c, hdr[:]); err == nil {
					_, _ = io.ReadFull(c, make([]byte, hdr[1]))
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Packets that wait for a peer whose cluster is removed are dropped with
// its connection, within seconds, and counted.
func TestTransportDropsQueuedPacketsOfRemovedPeer(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	removals := &revocations{removed: make(map[string]time.Time)}
	west := startTransport(t, issue(t, ca, membership.ClusterID(td, "west")), ca, func(c *gossip.TransportConfig) {
		c.Revoked = removals.revoked
	})
	central := newStalledPeer(t, issue(t, ca, membership.ClusterID(td, "central")), ca)
	toCentral := memberlist.Address{Addr: central.ln.Addr().String(), Name: "central-0a0b0c"}

	// Far more than the socket buffers hold: writes block, packets wait.
	big := make([]byte, gossip.MaxGossipPacket)
	for range 400 {
		if _, err := west.WriteToAddress(big, toCentral); err != nil {
			t.Fatal(err)
		}
	}
	fedtest.Eventually(t, 5*time.Second, "packets to wait on an open connection to central", func() bool {
		return west.Stats().Open["central"] == 1 && west.Queued() > 0
	})
	if q := west.Queued(); q*(4+gossip.MaxGossipPacket) > gossip.PacketQueueBytes {
		t.Errorf("%d packets of %d bytes wait, over the queue's %d bytes", q, gossip.MaxGossipPacket, gossip.PacketQueueBytes)
	}
	if d := west.Stats().Dropped[gossip.DroppedQueueFull]; d == 0 {
		t.Error("no packet dropped for a full queue")
	}

	removals.revoke("central")
	start := time.Now()
	fedtest.Eventually(t, 5*time.Second, "the removed peer's packets dropped and its connection closed", func() bool {
		st := west.Stats()
		return west.Queued() == 0 && st.Open["central"] == 0 && st.Dropped[gossip.DroppedRevoked] > 0
	})
	t.Logf("%d packets for removed central dropped %s after its removal", west.Stats().Dropped[gossip.DroppedRevoked], time.Since(start).Round(time.Millisecond))
	if west.Senders() != 0 {
		t.Errorf("%d senders left after the only peer was removed", west.Senders())
	}
}
