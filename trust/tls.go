package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Bundle returns an X.509 bundle source holding the CA certificates of td.
func Bundle(td spiffeid.TrustDomain, cas ...*x509.Certificate) x509bundle.Source {
	return x509bundle.FromX509Authorities(td, cas)
}

// ServerTLS returns an mTLS server configuration in which a client
// certificate is optional: one that is given must verify against bundle,
// and handlers authorize the caller's ID with PeerID. It lets one port
// serve both members and clusters that are joining with a token.
func ServerTLS(cred x509svid.Source, bundle x509bundle.Source) *tls.Config {
	conf := tlsconfig.MTLSServerConfig(cred, bundle, tlsconfig.AuthorizeAny())
	verify := conf.VerifyPeerCertificate
	conf.ClientAuth = tls.RequestClientCert
	conf.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return nil
		}
		return verify(raw, chains)
	}
	return conf
}

// ClientTLS returns an mTLS client configuration that presents cred and
// accepts servers whose ID the authorizer allows.
func ClientTLS(cred x509svid.Source, bundle x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	return tlsconfig.MTLSClientConfig(cred, bundle, authorize)
}

// ErrNoPeerID means a call carried no verified client certificate.
var ErrNoPeerID = errors.New("trust: caller presented no client certificate")

// PeerID returns the SPIFFE ID of a gRPC caller's verified certificate.
func PeerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, ErrNoPeerID
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoPeerID
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("trust: caller certificate: %w", err)
	}
	return id, nil
}

// PinnedTLS returns a client configuration for the first contact with a
// hub: the server's chain must end in a CA whose Fingerprint is pin, and its
// leaf must carry an ID with serverPath in that CA's trust domain. It trusts
// nothing else.
func PinnedTLS(pin, serverPath string, onCA func(*x509.Certificate)) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below against the pinned CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var certs []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs = append(certs, c)
			}
			if len(certs) < 2 {
				return fmt.Errorf("trust: hub sent no CA certificate to check against the token's fingerprint")
			}
			ca := certs[len(certs)-1]
			if got := Fingerprint(ca); got != pin {
				return fmt.Errorf("trust: hub CA fingerprint %s does not match the token's %s: the token is for another hub, or something is intercepting the connection", got, pin)
			}
			id, err := x509svid.IDFromCert(certs[0])
			if err != nil {
				return fmt.Errorf("trust: hub certificate: %w", err)
			}
			if _, _, err := x509svid.Verify(certs[:len(certs)-1], Bundle(id.TrustDomain(), ca)); err != nil {
				return fmt.Errorf("trust: hub certificate does not verify against the pinned CA: %w", err)
			}
			if id.Path() != serverPath {
				return fmt.Errorf("trust: hub presented %s, want path %s", id, serverPath)
			}
			if onCA != nil {
				onCA(ca)
			}
			return nil
		},
	}
}

// MTLSServer returns a server configuration for workloads: the peer must
// present an SVID that verifies against the bundle of its own trust domain
// (so an unfederated domain is refused) and whose ID authorize accepts.
// Every refusal is logged with the peer's claimed ID and the reason.
func MTLSServer(svid x509svid.Source, bundles x509bundle.Source, authorize tlsconfig.Authorizer, log *slog.Logger) *tls.Config {
	conf := tlsconfig.MTLSServerConfig(svid, bundles, authorize)
	conf.VerifyPeerCertificate = logRefusals(conf.VerifyPeerCertificate, log, "client")
	return conf
}

// MTLSClient is MTLSServer's counterpart for the dialing side.
func MTLSClient(svid x509svid.Source, bundles x509bundle.Source, authorize tlsconfig.Authorizer, log *slog.Logger) *tls.Config {
	conf := tlsconfig.MTLSClientConfig(svid, bundles, authorize)
	conf.VerifyPeerCertificate = logRefusals(conf.VerifyPeerCertificate, log, "server")
	return conf
}

type verifyFunc func(raw [][]byte, chains [][]*x509.Certificate) error

func logRefusals(verify verifyFunc, log *slog.Logger, role string) verifyFunc {
	if log == nil {
		log = slog.Default()
	}
	return func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err != nil {
			claimed := "none"
			if len(raw) > 0 {
				if c, perr := x509.ParseCertificate(raw[0]); perr == nil {
					if id, ierr := x509svid.IDFromCert(c); ierr == nil {
						claimed = id.String()
					}
				}
			}
			log.Warn("refused TLS "+role, "peer_id", claimed, "reason", err)
		}
		return err
	}
}

// UnionBundles is an X.509 bundle source that asks each source in turn.
type UnionBundles []x509bundle.Source

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (u UnionBundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	for _, s := range u {
		if b, err := s.GetX509BundleForTrustDomain(td); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFederated, td)
}

// PeerCertificate returns a gRPC caller's verified leaf certificate.
func PeerCertificate(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, ErrNoPeerID
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, ErrNoPeerID
	}
	return info.State.PeerCertificates[0], nil
}
