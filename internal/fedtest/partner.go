package fedtest

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Partner is a trust domain outside the federation, as a SPIRE server
// would run it: roots it adds and revokes, and a self-serving
// https_spiffe bundle endpoint refreshed every second.
type Partner struct {
	TD  spiffeid.TrustDomain
	URL string
	// EndpointID is the SVID its bundle endpoint presents.
	EndpointID spiffeid.ID

	t      testing.TB
	served *trust.BundleSet
	first  *spiffebundle.Bundle
	mu     sync.Mutex // guards roots and seq
	roots  []*trust.CA
	seq    uint64
}

// NewPartner starts a partner trust domain with one root.
func NewPartner(t testing.TB, name string) *Partner {
	t.Helper()
	p := &Partner{t: t, TD: spiffeid.RequireTrustDomainFromString(name), served: trust.NewBundleSet()}
	p.EndpointID = spiffeid.RequireFromPath(p.TD, "/bundle-endpoint")
	p.AddRoot()
	p.first = p.Bundle()
	endpoint := p.Issue(0, p.EndpointID)
	handler, err := federation.NewHandler(p.TD, p.served)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.TLSServerConfig(endpoint))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(); <-done })
	p.URL = "https://" + lis.Addr().String() + "/"
	return p
}

// External is the hub's configuration for importing the partner.
func (p *Partner) External() hub.ExternalTrustDomain {
	return hub.ExternalTrustDomain{TrustDomain: p.TD, URL: p.URL, Profile: hub.ProfileHTTPSSPIFFE, EndpointID: p.EndpointID, Bundle: p.first}
}

// AddRoot adds a root (as SPIRE's 'localauthority x509 prepare') and
// serves the new bundle; it returns the root's index.
func (p *Partner) AddRoot() int {
	p.t.Helper()
	ca, err := trust.NewCA(p.TD, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.roots = append(p.roots, ca)
	i := len(p.roots) - 1
	p.mu.Unlock()
	p.publish()
	return i
}

// Revoke removes root i from the bundle (as SPIRE's 'localauthority x509
// revoke'): its SVIDs must be refused from then on.
func (p *Partner) Revoke(i int) {
	p.mu.Lock()
	p.roots[i] = nil
	p.mu.Unlock()
	p.publish()
}

// Bundle is the bundle served now.
func (p *Partner) Bundle() *spiffebundle.Bundle {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := spiffebundle.New(p.TD)
	for _, ca := range p.roots {
		if ca != nil {
			b.AddX509Authority(ca.Cert)
		}
	}
	b.SetSequenceNumber(p.seq)
	b.SetRefreshHint(time.Second)
	return b
}

func (p *Partner) publish() {
	p.mu.Lock()
	p.seq++
	p.mu.Unlock()
	if _, err := p.served.Update(p.Bundle()); err != nil {
		p.t.Fatal(err)
	}
}

// Issue returns an SVID for id signed by root i, valid for an hour.
func (p *Partner) Issue(i int, id spiffeid.ID) *trust.Credential {
	p.t.Helper()
	p.mu.Lock()
	ca := p.roots[i]
	p.mu.Unlock()
	key, err := trust.GenerateKey()
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, err := ca.Issue(id, key.Public(), time.Hour, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	cred, err := trust.NewCredential([]*x509.Certificate{leaf}, key)
	if err != nil {
		p.t.Fatal(err)
	}
	return cred
}
