package membership

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Files 'federate join' writes into a cluster's data directory; the hub
// writes CAFile into its own too.
const (
	CredentialFile = "credential.pem"
	MembershipFile = "federation.json"
	CAFile         = "ca.pem"
)

// Membership is what a cluster keeps after joining.
type Membership struct {
	Mesh        string   `json:"mesh"`
	Cluster     string   `json:"cluster"`
	Hub         string   `json:"hub"`
	GossipSeeds []string `json:"gossipSeeds"`

	Credential *trust.Credential   `json:"-"`
	CA         []*x509.Certificate `json:"-"`
}

// Join trades a token for a cluster credential. The hub must present a CA
// matching the token's fingerprint; nothing else about it is trusted.
func Join(ctx context.Context, token string) (*Membership, error) {
	tok, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	key, err := trust.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := trust.NewCSR(key)
	if err != nil {
		return nil, err
	}
	// The mesh name is learnt from the hub's certificate, checked against the pin.
	var ca *x509.Certificate
	tlsConf := trust.PinnedTLS(tok.CA, "/hub", func(c *x509.Certificate) { ca = c })
	conn, err := NewHubClient(tok.Hub, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return nil, fmt.Errorf("membership: dial %s: %w", tok.Hub, err)
	}
	defer conn.Close()
	if err := AwaitAnswer(ctx, conn); errors.Is(err, ErrNoAnswer) {
		return nil, fmt.Errorf("the hub at %s does not answer: no TLS handshake within %s; check that the hub runs and is not stopped or overloaded, and that %s (from the token) reaches it", tok.Hub, AnswerTimeout, tok.Hub)
	} else if err != nil {
		return nil, err
	}
	resp, err := hubpb.NewHubClient(conn).Join(ctx, &hubpb.JoinRequest{Token: token, Csr: csr})
	if err != nil {
		s := status.Convert(err)
		if s.Code() == codes.Unavailable {
			// Includes a hub whose CA does not match the token's pin.
			return nil, fmt.Errorf("cannot reach a trusted hub at %s: %s", tok.Hub, ExplainUnreachable("hub", tok.Hub, s.Message()))
		}
		return nil, fmt.Errorf("hub %s refused the join: %s", tok.Hub, s.Message())
	}
	certs, err := trust.ParseCertificates(resp.GetCertificates())
	if err != nil {
		return nil, fmt.Errorf("membership: join response: %w", err)
	}
	if ca == nil || !ca.Equal(certs[len(certs)-1]) {
		return nil, errors.New("membership: join response is not signed by the pinned CA")
	}
	cred, err := trust.NewCredential(certs, key)
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(resp.GetMesh())
	if err != nil || cred.ID() != ClusterID(td, tok.Cluster) {
		return nil, fmt.Errorf("membership: join returned credential %s, want cluster %q", cred.ID(), tok.Cluster)
	}
	return &Membership{
		Mesh: resp.GetMesh(), Cluster: resp.GetCluster(), Hub: tok.Hub,
		GossipSeeds: resp.GetGossipSeeds(),
		Credential:  cred, CA: []*x509.Certificate{ca},
	}, nil
}

// Save writes the membership into dir.
func (m *Membership) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := m.Credential.Save(filepath.Join(dir, CredentialFile)); err != nil {
		return err
	}
	if err := trust.WriteFileAtomic(filepath.Join(dir, CAFile), trust.EncodeCertificates(m.CA...), 0o644); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	return trust.WriteFileAtomic(filepath.Join(dir, MembershipFile), data, 0o600)
}

// LoadMembership reads what Save wrote.
func LoadMembership(dir string) (*Membership, error) {
	data, err := os.ReadFile(filepath.Join(dir, MembershipFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("membership: %s has no %s: join the cluster first with 'federate join --token TOKEN --data-dir %s'", dir, MembershipFile, dir)
	}
	if err != nil {
		return nil, err
	}
	m := new(Membership)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("membership: %s: %w", filepath.Join(dir, MembershipFile), err)
	}
	if err := registry.ValidClusterName(m.Cluster); err != nil {
		return nil, fmt.Errorf("membership: %s: %w", filepath.Join(dir, MembershipFile), err)
	}
	if m.Credential, err = trust.LoadCredential(filepath.Join(dir, CredentialFile)); err != nil {
		return nil, err
	}
	if m.CA, err = trust.LoadCertificates(filepath.Join(dir, CAFile)); err != nil {
		return nil, err
	}
	return m, nil
}

// Dial opens an mTLS connection to a federation API (hub or control plane)
// with a credential file, trusting the CA file.
func Dial(addr, credentialPath, caPath string) (*grpc.ClientConn, error) {
	return dial(addr, "", "", credentialPath, caPath)
}

// DialControlPlane opens an mTLS connection to cluster's control plane at
// addr: its own listener, or its gateway, which routes the connection by
// the internal name controlplane.<cluster>.federate.internal.
// The server must present that cluster's credential: an address that
// reaches another cluster's control plane is refused in the handshake.
func DialControlPlane(addr, cluster, credentialPath, caPath string) (*grpc.ClientConn, error) {
	return dial(addr, sni.Internal(sni.ControlPlane, cluster), cluster, credentialPath, caPath)
}

// dial connects with the credential and CA files; with cluster set, only
// that cluster's control plane is accepted, else any member of the mesh.
func dial(addr, serverName, cluster, credentialPath, caPath string) (*grpc.ClientConn, error) {
	cred, err := trust.LoadCredential(credentialPath)
	if err != nil {
		return nil, err
	}
	cas, err := trust.LoadCertificates(caPath)
	if err != nil {
		return nil, err
	}
	td := cred.ID().TrustDomain()
	authorize := AuthorizeMember(td)
	if cluster != "" {
		authorize = authorizeControlPlane(td, cluster)
	}
	tlsConf := trust.ClientTLS(cred, trust.Bundle(td, cas...), authorize)
	tlsConf.ServerName = serverName
	return NewHubClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes)))
}
