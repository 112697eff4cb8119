package member_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// A gateway's SVID renews itself at half life over the CSR API, presenting
// the SVID it holds: no token and no cluster credential after the first.
func TestIntegrationWorkloadRenewsWithItsOwnSVID(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	east := tm.AddCluster("east")
	east.Update(t)
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	id := spiffeid.RequireFromPath(eastTD, "/ns/istio-system/sa/eastwest-gateway")
	cas, err := trust.LoadCertificates(filepath.Join(tm.Dir, "east", membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := east.Member.Authority().IssueCredential(id, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := cred.Leaf()
	// The connection presents the workload's current SVID on every handshake.
	tlsConf := trust.ClientTLS(cred, trust.UnionBundles{trust.Bundle(meshTD, cas...), east.Member.Bundles()}, tlsconfig.AuthorizeID(membership.ClusterID(meshTD, "east")))
	conn, err := grpc.NewClient(east.Member.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	renewed := make(chan struct{}, 8)
	r := &trust.Renewer{
		Credential: cred,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			resp, err := hubpb.NewControlPlaneClient(conn).SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id.String(), TtlSeconds: 2})
			if err != nil {
				return nil, err
			}
			return trust.ParseCertificates(resp.GetCertificates())
		},
		OnRenew: func(*trust.Credential) { renewed <- struct{}{} },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	// Two renewals: the second is authorized by the first renewed SVID.
	for range 2 {
		select {
		case <-renewed:
		case <-ctx.Done():
			t.Fatal("no renewal within 20s")
		}
	}
	if cred.Leaf().SerialNumber.Cmp(first.SerialNumber) == 0 || !time.Now().Before(cred.Expiry()) {
		t.Fatal("the workload credential was not renewed")
	}
	waitUntilTime(t, first.NotAfter.Add(time.Second))
	if !time.Now().Before(cred.Expiry()) {
		t.Fatal("the workload holds no valid SVID after the first one expired")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// waitUntilTime blocks until the wall clock passes at.
func waitUntilTime(t *testing.T, at time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	<-timer.C
}
