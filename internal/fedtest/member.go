package fedtest

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// StopMembers stops every running member at once. One by one they take a
// while: each waits for its gossip leave to go out. A test that registers
// it as a cleanup after NewMesh ends that much sooner.
func (tm *Mesh) StopMembers() {
	tm.mu.Lock()
	var names []string
	for name, m := range tm.members {
		if m.stop != nil {
			names = append(names, name)
		}
	}
	tm.mu.Unlock()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() { tm.StopMember(name) })
	}
	wg.Wait()
}

// StartMemberGateway runs an east-west gateway on lis for member m, configured
// over ADS by m as cmd/eastwest-gateway wires it, and waits for its first
// routing table. done reports Serve's result once ctx ends.
func (tm *Mesh) StartMemberGateway(ctx context.Context, m *Member, lis *net.TCPListener) (gw *eastwest.Gateway, done <-chan error) {
	t := tm.t
	t.Helper()
	td := m.Member.Authority().TrustDomain()
	gwCred, err := m.Member.Authority().IssueCredential(spiffeid.RequireFromPath(td, "/ns/istio-system/sa/eastwest-gateway"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := trust.LoadCertificates(filepath.Join(m.Dir, membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	meshTD := spiffeid.RequireTrustDomainFromString(m.Member.Mesh())
	conn, err := grpc.NewClient(m.Member.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		trust.ClientTLS(gwCred, trust.Bundle(meshTD, cas...), tlsconfig.AuthorizeID(membership.ClusterID(meshTD, m.Name))))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	routes := &xdsclient.Routes{}
	go xdsclient.NewClient(xdsclient.ClientConfig{Conn: conn, NodeID: m.Name + "-gw", OnUpdate: routes.Set, Logger: tm.log}).Run(ctx)
	gw, err = eastwest.New(eastwest.Config{Router: routes, Logger: tm.log.With("node", m.Name+"-gw")})
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- gw.Serve(ctx, lis) }()
	Eventually(t, 10*time.Second, "the gateway's routing table", routes.Ready)
	return gw, serveDone
}
