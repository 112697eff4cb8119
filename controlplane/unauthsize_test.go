package controlplane_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/internal/connguard"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/trust"
)

// A caller without a client certificate may make one call, Bootstrap,
// whose request is a token and a CSR: a few KiB. The control plane's port
// is reachable through the east-west gateway from every network, so such
// a caller must not make it read a message of many MiB (grpc-go reads a
// whole message before any handler sees who sent it): its connection is
// closed once it has sent 256 KiB, while a Bootstrap of a real size is
// answered.
func TestAPIBoundsUnauthenticatedMessages(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	cp := tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource()})
	closed := closedCounter(t, cp)
	m := cp.Member()
	mesh := spiffeid.RequireTrustDomainFromString(m.Mesh())
	noCert := tlsconfig.TLSClientConfig(trust.Bundle(mesh, m.MeshCA()...), tlsconfig.AuthorizeMemberOf(mesh))
	ctx := fedtest.DeadlineContext(t, 30*time.Second)

	conn := fedtest.DialWith(t, m.Addr(), credentials.NewTLS(noCert))
	_, err := agentpb.NewWorkloadsClient(conn).Bootstrap(ctx, &agentpb.BootstrapRequest{Token: "fedvm1.not.atoken", Csr: make([]byte, 4<<10)})
	fedtest.WantCode(t, err, "a Bootstrap of a real size with a bad token", codes.Unauthenticated)

	const size = 8 << 20
	conn = fedtest.DialWith(t, m.Addr(), credentials.NewTLS(noCert))
	_, err = agentpb.NewWorkloadsClient(conn).Bootstrap(ctx, &agentpb.BootstrapRequest{Token: strings.Repeat("x", size)},
		grpc.MaxCallSendMsgSize(size+1024))
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("an 8 MiB Bootstrap without a client certificate: %v, want the connection closed (Unavailable)", err)
	}
	if got := closed(connguard.ReasonTooMuchData); got != 1 {
		t.Errorf("connections closed for %s: %v, want 1", connguard.ReasonTooMuchData, got)
	}
}

// Connections without a client certificate are few at once: past 64,
// each new one is closed after its handshake, and counted.
func TestAPIBoundsUnauthenticatedConnections(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	cp := tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource(), UnauthenticatedTimeout: time.Minute})
	closed := closedCounter(t, cp)
	m := cp.Member()
	mesh := spiffeid.RequireTrustDomainFromString(m.Mesh())
	noCert := tlsconfig.TLSClientConfig(trust.Bundle(mesh, m.MeshCA()...), tlsconfig.AuthorizeMemberOf(mesh))
	noCert.NextProtos = []string{"h2"}
	const extra = 3
	for range connguard.DefaultMaxUnauthenticated + extra {
		c, err := tls.Dial("tcp", m.Addr(), noCert)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	fedtest.Eventually(t, 10*time.Second, "the connections past the limit closed", func() bool {
		return closed(connguard.ReasonTooManyConnections) == extra
	})
}
