package xdsclient_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/internal/fedtest"
)

// A peer that dials the gateway as soon as it listens, before the first
// table has arrived over xDS, is held until the table is in place and then
// relayed: it is not refused as an unknown name.
func TestGatewayHoldsConnectionsUntilFirstTable(t *testing.T) {
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	routes := &xdsclient.Routes{}
	gw, err := eastwest.New(eastwest.Config{Router: routes, DrainTimeout: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()

	name := sni.Internal(sni.Gossip, "east")
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// The hello goes out at once; the handshake itself never completes.
	go tls.Client(client, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
	time.Sleep(200 * time.Millisecond) // long enough for a gateway to refuse it
	if st := gw.Stats(); st.Refused[eastwest.RefusedUnknownSNI] != 0 {
		t.Fatalf("refused before the first table: %+v", st)
	}
	routes.Set(&xdsclient.Table{Version: "1", Routes: map[string][]string{name: {upstream.Addr().String()}}})

	upstream.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := upstream.Accept()
	if err != nil {
		t.Fatalf("the held connection did not reach its upstream: %v (%+v)", err, gw.Stats())
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rec [1]byte
	if _, err := io.ReadFull(c, rec[:]); err != nil || rec[0] != 22 {
		t.Fatalf("upstream read %v, %v; want a TLS handshake record", rec, err)
	}
	// The gateway counts the relay after writing the hello, which the
	// upstream may read first.
	fedtest.Eventually(t, 5*time.Second, "the relay counted", func() bool { return gw.Stats().Relayed == 1 })
	if st := gw.Stats(); st.Relayed != 1 || st.Refused[eastwest.RefusedUnknownSNI] != 0 {
		t.Errorf("stats %+v, want 1 relayed and none refused", st)
	}
}
