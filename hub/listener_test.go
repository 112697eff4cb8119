package hub_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
)

// dialUnauthenticated completes a TLS handshake with the hub without a
// client certificate, as a joining cluster (or anyone) does.
func dialUnauthenticated(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
	conn, err := d.DialContext(fedtest.DeadlineContext(t, 10*time.Second), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn.(*tls.Conn)
}

// served reports whether the hub serves conn: gRPC's server speaks first
// (its HTTP/2 SETTINGS), and a refused connection is closed instead.
func served(t *testing.T, conn net.Conn) bool {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var b [9]byte // an HTTP/2 frame header
	_, err := io.ReadFull(conn, b[:])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return false
	}
	if err != nil {
		t.Fatalf("reading from the hub: %v", err)
	}
	return true
}

// The hub serves a bounded number of connections without a client
// certificate; beyond it new ones are closed, members are still served,
// and a closed connection frees its place.
func TestUnauthenticatedConnectionsAreLimited(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	conns := make([]*tls.Conn, hub.MaxUnauthenticatedConns)
	for i := range conns {
		conns[i] = dialUnauthenticated(t, tm.HubAddr)
		if !served(t, conns[i]) {
			t.Fatalf("unauthenticated connection %d of %d was refused", i+1, len(conns))
		}
	}
	if served(t, dialUnauthenticated(t, tm.HubAddr)) {
		t.Fatalf("connection %d without a certificate was served; the limit is %d", len(conns)+1, len(conns))
	}
	ctx := fedtest.DeadlineContext(t, 10*time.Second)
	if _, err := hubpb.NewRegistryClient(tm.DialAsCluster(t, "east")).Status(ctx, &hubpb.StatusRequest{}); err != nil {
		t.Fatalf("a member at the unauthenticated limit: %v", err)
	}
	conns[0].Close()
	fedtest.Eventually(t, 10*time.Second, "a closed connection frees its place", func() bool {
		return served(t, dialUnauthenticated(t, tm.HubAddr))
	})
}
