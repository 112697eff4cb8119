package hub_test

import (
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
	"google.golang.org/grpc/codes"
)

// A proxyless gRPC application verifies its control plane by host name
// against the mesh CA, which signs every cluster's credential, so a
// serving name is worth exactly as much as the hub's promise that only one
// cluster holds it. Once west's credential carries cp.west.example and
// 10.0.0.5 (docs/proxyless-grpc.md), east's credential renewing with them
// is refused, and the hub issues nothing that passes as west's control
// plane to west's applications; west renews with them still. Once west is
// removed from the federation, the names are free.
func TestSecurityServingNamesBelongToOneCluster(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	tm.Join("west")
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	renew := func(cluster string, names ...string) (*x509.Certificate, error) {
		t.Helper()
		key, err := trust.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := trust.NewCSR(key, names...)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hubpb.NewHubClient(tm.DialAsCluster(t, cluster)).Renew(ctx, &hubpb.RenewRequest{Csr: csr})
		if err != nil {
			return nil, err
		}
		certs, err := trust.ParseCertificates(resp.GetCertificates())
		if err != nil {
			t.Fatal(err)
		}
		return certs[0], nil
	}
	if _, err := renew("west", "cp.west.example", "10.0.0.5"); err != nil {
		t.Fatalf("west renewing with its serving names: %v", err)
	}
	// What west's proxyless applications check: the host they dial,
	// against the mesh CA.
	roots := x509.NewCertPool()
	roots.AddCert(tm.HubCA(t))
	for _, name := range []string{"cp.west.example", "10.0.0.5"} {
		cert, err := renew("east", name)
		if err == nil {
			verr := cert.VerifyHostname(name)
			if verr == nil {
				_, verr = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: hostOf(name), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			}
			t.Errorf("east's credential renewed with west's serving name %s: issued DNS names %v, IP addresses %v; as west's control plane to west's applications it verifies: %v",
				name, cert.DNSNames, cert.IPAddresses, verr == nil)
			continue
		}
		fedtest.WantCode(t, err, "east asking for west's serving name "+name, codes.PermissionDenied)
	}
	if _, err := renew("west", "cp.west.example", "10.0.0.5"); err != nil {
		t.Fatalf("west renewing with its serving names again: %v", err)
	}

	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "west"}); err != nil {
		t.Fatal(err)
	}
	cert, err := renew("east", "cp.west.example", "10.0.0.5")
	if err != nil {
		t.Fatalf("east asking for west's former serving names after west's removal: %v", err)
	}
	if err := cert.VerifyHostname("cp.west.example"); err != nil {
		t.Errorf("east's credential: %v", err)
	}
}

// Replicas on etcd keep who holds each serving name there: a replica that
// starts after a claim reads it as the federation's own, and refuses the
// name to another cluster as the first replica does.
func TestHAServingNamesAreKeptInEtcd(t *testing.T) {
	h := newHAMesh(t, 1)
	h.Join("east")
	h.Join("west")
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	renew := func(cluster, addr string) error {
		key, err := trust.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := trust.NewCSR(key, "cp.west.example")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := membership.Dial(addr, filepath.Join(h.Dir, cluster, membership.CredentialFile), filepath.Join(h.Dir, cluster, membership.CAFile))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = hubpb.NewHubClient(conn).Renew(ctx, &hubpb.RenewRequest{Csr: csr})
		return err
	}
	if err := renew("west", h.Addr(0)); err != nil {
		t.Fatalf("west renewing with its serving name: %v", err)
	}
	h.StartReplica(1)
	fedtest.WantCode(t, renew("east", h.Addr(1)), "east asking replica 1 for west's serving name", codes.PermissionDenied)
}

// hostOf is name as x509.VerifyOptions.DNSName takes it: IP addresses
// are matched against IP SANs when given in their text form.
func hostOf(name string) string {
	if ip := net.ParseIP(name); ip != nil {
		return ip.String()
	}
	return name
}
