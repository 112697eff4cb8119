package fedtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// DeadlineContext ends with the test or after d, whichever comes first.
func DeadlineContext(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// ClusterCredential loads the credential a joined cluster saved.
func (tm *Mesh) ClusterCredential(t testing.TB, cluster string) *trust.Credential {
	t.Helper()
	cred, err := trust.LoadCredential(filepath.Join(tm.Dir, cluster, membership.CredentialFile))
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// DialAsCluster connects to the hub with a joined cluster's files, as
// 'federate' does.
func (tm *Mesh) DialAsCluster(t testing.TB, cluster string) *grpc.ClientConn {
	t.Helper()
	conn, err := membership.Dial(tm.HubAddr, filepath.Join(tm.Dir, cluster, membership.CredentialFile), filepath.Join(tm.Dir, cluster, membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// HubCA returns the hub's CA certificate, which every mesh credential
// chains to.
func (tm *Mesh) HubCA(t testing.TB) *x509.Certificate {
	t.Helper()
	cas, err := trust.LoadCertificates(filepath.Join(tm.Dir, "hub", membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	return cas[0]
}

// DialWith connects to addr with a TLS configuration of the test's making.
func DialWith(t testing.TB, addr string, conf credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(conf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ServiceRecord is a record of svc in cluster's slice.
func ServiceRecord(cluster string, svc *registry.Service, incarnation, counter uint64) *registry.Record {
	return &registry.Record{
		Cluster: cluster, Key: svc.GetHostname(),
		Version:  &registry.Version{Incarnation: incarnation, Counter: counter},
		SignedAt: time.Now().UnixNano(),
		Body:     &registrypb.Record_Service{Service: svc},
	}
}

// SignWith signs rec with cred's key whatever cluster rec names: what a
// cluster trying to forge another's slice would do, since registry.Signer
// refuses.
func SignWith(t testing.TB, cred *trust.Credential, rec *registry.Record) *registrypb.SignedRecord {
	t.Helper()
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, cred.Key().(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return &registrypb.SignedRecord{Record: body, Signature: sig, Signer: cred.Leaf().Raw}
}

// WantCode fails unless err is a gRPC error with one of the codes.
func WantCode(t testing.TB, err error, what string, want ...codes.Code) *status.Status {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want one of %v", what, want)
	}
	st, _ := status.FromError(err)
	t.Logf("%s: refused: %v", what, err)
	if !slices.Contains(want, st.Code()) {
		t.Fatalf("%s: %v, want one of %v", what, err, want)
	}
	return st
}

// RandomBytes returns n random bytes.
func RandomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Converged reports whether every running member other than the owner
// holds the owner's current version.
func (tm *Mesh) Converged(owner string) bool {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	want := tm.members[owner].Member.Version(owner)
	for name, m := range tm.members {
		if name == owner || m.stop == nil {
			continue
		}
		if registry.Compare(m.Member.Version(owner), want) != 0 {
			return false
		}
	}
	return true
}

// EndpointsOf returns the endpoints m routes to for one service of a
// cluster, or nil.
func EndpointsOf(m *member.Member, cluster, service string) []*registry.Endpoint {
	for _, s := range m.Services(cluster) {
		if s.GetName() == service {
			return s.GetEndpoints()
		}
	}
	return nil
}

// StartCoffeeShop starts a mesh of three clusters, east (order), west
// (payment) and central (inventory and payment), and waits until every
// member holds every slice.
func StartCoffeeShop(t testing.TB, timers gossip.Timers) *Mesh {
	t.Helper()
	tm := NewMesh(t, timers)
	tm.AddCluster("east").Update(t, CoffeeService("east", "order", 2, 18080))
	tm.AddCluster("west").Update(t, CoffeeService("west", "payment", 2, 18081))
	tm.AddCluster("central").Update(t, CoffeeService("central", "inventory", 1, 18082), CoffeeService("central", "payment", 1, 18083))
	for _, c := range []string{"east", "west", "central"} {
		Eventually(t, 10*time.Second, c+" converged", func() bool { return tm.Converged(c) })
	}
	return tm
}
