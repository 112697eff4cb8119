package gossip_test

import (
	"crypto/tls"
	"encoding/binary"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// A TLS client that presents no certificate, or a workload SVID of a
// cluster's own trust domain (which gossip does not trust), delivers
// nothing to memberlist however well formed its preamble and packet.
func TestTLSTransportRefusesCallersWithoutAMeshCredential(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := testTransport(t, ca, membership.ClusterID(td, "west"))
	addr := b.Addr().String()
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	eastCA, err := trust.NewCA(eastTD, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The packet a genuine east node would send.
	packet := append(gossip.Preamble(gossip.ConnPackets, "east-1a2b3c"), binary.BigEndian.AppendUint32(nil, 2)...)
	packet = append(packet, 'h', 'i')

	for name, conf := range map[string]*tls.Config{
		"no client certificate": tlsconfig.TLSClientConfig(trust.Bundle(td, ca.Cert), tlsconfig.AuthorizeAny()),
		"a workload SVID of east.shop": tlsconfig.MTLSClientConfig(issue(t, eastCA, spiffeid.RequireFromPath(eastTD, "/ns/shop/sa/order")),
			trust.Bundle(td, ca.Cert), tlsconfig.AuthorizeAny()),
		"a workload SVID of the mesh's trust domain": tlsconfig.MTLSClientConfig(issue(t, ca, spiffeid.RequireFromPath(td, "/ns/shop/sa/order")),
			trust.Bundle(td, ca.Cert), tlsconfig.AuthorizeAny()),
	} {
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Logf("%s: refused during the handshake: %v", name, err)
			continue
		}
		c.Write(packet)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: the connection stayed open", name)
		} else {
			t.Logf("%s: closed: %v", name, err)
		}
		c.Close()
	}
	select {
	case p := <-b.PacketCh():
		t.Fatalf("a caller without a mesh credential delivered a packet: %q", p.Buf)
	case s := <-b.StreamCh():
		t.Fatalf("a caller without a mesh credential opened a stream from %s", s.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
}
