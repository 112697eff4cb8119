package xds

import (
	"slices"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/federate/federate/locality"
)

// CertificateProvider is the certificate provider instance a client's
// clusters name for both its own SVID and the roots it trusts, as in
// Istio's proxyless gRPC bootstrap: the client's bootstrap defines it
// (a grpc-go file_watcher over the files 'federate-agent svid' keeps).
const CertificateProvider = "default"

// transportSocketName is the name grpc-go and Envoy require for TLS.
const transportSocketName = "envoy.transport_sockets.tls"

// upstreamTLS is the transport socket of a client cluster: mTLS with the
// client's SVID, the SNI the gateways route by (the cluster name, so that
// a remote endpoint's gateway can pass the connection through), and only
// the SPIFFE IDs of the cluster's endpoints accepted from the server. An
// empty ids list accepts any SVID that verifies against the roots.
func upstreamTLS(sni string, ids []string) (*corepb.TransportSocket, error) {
	matchers := make([]*matcherpb.StringMatcher, 0, len(ids))
	for _, id := range ids {
		matchers = append(matchers, &matcherpb.StringMatcher{MatchPattern: &matcherpb.StringMatcher_Exact{Exact: id}})
	}
	provider := func(name string) *tlspb.CertificateProviderPluginInstance {
		return &tlspb.CertificateProviderPluginInstance{InstanceName: CertificateProvider, CertificateName: name}
	}
	ctx, err := anypb.New(&tlspb.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlspb.CommonTlsContext{
			AlpnProtocols:                  []string{"h2"},
			TlsCertificateProviderInstance: provider("default"),
			ValidationContextType: &tlspb.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlspb.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlspb.CertificateValidationContext{
						//lint:ignore SA1019 grpc-go reads only match_subject_alt_names, not the typed form
						MatchSubjectAltNames:          matchers,
						CaCertificateProviderInstance: provider("ROOTCA"),
					},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corepb.TransportSocket{Name: transportSocketName, ConfigType: &corepb.TransportSocket_TypedConfig{TypedConfig: ctx}}, nil
}

// spiffeIDs lists the SPIFFE IDs of every endpoint of the sources, sorted:
// the identities a client accepts from the cluster's servers, whichever
// cluster answers (a gateway passes the backend's own handshake through).
func spiffeIDs(sources []locality.Source) []string {
	var ids []string
	for _, src := range sources {
		for _, ep := range src.Service.GetEndpoints() {
			if id := ep.GetSpiffeId(); id != "" {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
