package xds

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ClientNodeID is the node ID of a client: Istio's sidecar node form,
// sidecar~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local, which
// the control plane's authorizer reads as a client of namespace.
func ClientNodeID(ip, name, namespace string) string {
	return fmt.Sprintf("%s%s~%s.%s~%s.svc.cluster.local", ClientNodePrefix, ip, name, namespace, namespace)
}

// DefaultRefreshInterval is how often grpc-go's file_watcher rereads the
// SVID files: well inside the half of an SVID's lifetime that is left when
// it is renewed.
const DefaultRefreshInterval = time.Minute

// GRPCBootstrap is what a proxyless gRPC application's xDS bootstrap
// (gRFC A27, with A29's certificate providers and A65's mTLS channel
// credentials) says: where the control plane is, who the application is,
// and the files that hold its SVID.
type GRPCBootstrap struct {
	// Server is the control plane's host:port. The host must be a name (or
	// address) in the control plane's certificate: its internal name
	// controlplane.<cluster>.federate.internal through the gateway, or one
	// given with 'federate controlplane --serving-name'.
	Server string
	// Namespace and Name are the application's; IP is its address (any
	// placeholder will do; the node ID carries it for logs).
	Namespace, Name, IP string
	// CertificateFile, KeyFile and RootsFile are the application's SVID
	// chain, its key and the federated trust domains' roots, kept renewed
	// by 'federate-agent svid'. ControlPlaneRootsFile verifies the control
	// plane's certificate (the mesh CA).
	CertificateFile, KeyFile, RootsFile, ControlPlaneRootsFile string
	// RefreshInterval is how often the files are reread (default
	// DefaultRefreshInterval).
	RefreshInterval time.Duration
}

// ErrBootstrap wraps every reason a bootstrap cannot be written.
var ErrBootstrap = errors.New("xds: bootstrap")

// JSON renders the bootstrap, after checking every field.
func (b GRPCBootstrap) JSON() ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	refresh := b.RefreshInterval
	if refresh == 0 {
		refresh = DefaultRefreshInterval
	}
	files := map[string]string{
		"certificate_file":    b.CertificateFile,
		"private_key_file":    b.KeyFile,
		"ca_certificate_file": b.RootsFile,
		"refresh_interval":    strconv.FormatFloat(refresh.Seconds(), 'f', -1, 64) + "s",
	}
	doc := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": b.Server,
			// mTLS with the SVID: the control plane answers no one else.
			"channel_creds": []any{map[string]any{"type": "tls", "config": map[string]string{
				"certificate_file": b.CertificateFile, "private_key_file": b.KeyFile, "ca_certificate_file": b.ControlPlaneRootsFile,
			}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": ClientNodeID(b.IP, b.Name, b.Namespace)},
		// The instance the clusters' UpstreamTlsContext names, for the
		// application's SVID and the roots of every federated trust domain.
		"certificate_providers": map[string]any{
			CertificateProvider: map[string]any{"plugin_name": "file_watcher", "config": files},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func (b GRPCBootstrap) check() error {
	host, port, err := net.SplitHostPort(b.Server)
	if err != nil || host == "" {
		return fmt.Errorf("%w: control plane %q: want host:port, such as controlplane.<cluster>.federate.internal:15443", ErrBootstrap, b.Server)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w: control plane %q: the port must be a number from 1 to 65535", ErrBootstrap, b.Server)
	}
	for _, f := range []struct{ what, v string }{{"namespace", b.Namespace}, {"name", b.Name}} {
		if errs := validation.IsDNS1123Label(f.v); len(errs) > 0 {
			return fmt.Errorf("%w: %s %q: %s", ErrBootstrap, f.what, f.v, strings.Join(errs, "; "))
		}
	}
	if net.ParseIP(b.IP) == nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrBootstrap, b.IP)
	}
	for _, f := range []struct{ what, v string }{
		{"certificate file", b.CertificateFile}, {"key file", b.KeyFile},
		{"roots file", b.RootsFile}, {"control plane roots file", b.ControlPlaneRootsFile},
	} {
		if f.v == "" {
			return fmt.Errorf("%w: the %s is not set", ErrBootstrap, f.what)
		}
	}
	if b.RefreshInterval < 0 {
		return fmt.Errorf("%w: refresh interval %v is negative", ErrBootstrap, b.RefreshInterval)
	}
	return nil
}
