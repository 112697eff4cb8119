package membership

import (
	"strings"
	"testing"
)

// A call that never reached the server says what the address reached
// instead, and what to check; the messages are gRPC's, as a client sees
// them.
func TestExplainUnreachable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, role, msg string
		want            []string
	}{
		{"refused", "hub", `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`,
			[]string{"nothing listens at 127.0.0.1:1", "hub runs", "--listen", "15012"}},
		{"plain HTTP", "hub", `connection error: desc = "transport: authentication handshake failed: tls: first record does not look like a TLS handshake"`,
			[]string{"does not speak TLS", "not the hub's gRPC address"}},
		{"TLS without gRPC", "control plane", `connection error: desc = "transport: authentication handshake failed: credentials: cannot check peer: missing selected ALPN property. If you upgraded..."`,
			[]string{"speaks TLS but not gRPC", "15013"}},
		{"another mesh", "hub", `connection error: desc = "transport: authentication handshake failed: x509svid: could not get X509 bundle: x509bundle: no X.509 bundle found for trust domain: \"shop\""`,
			[]string{`belongs to mesh "shop"`, "pass a credential of that mesh"}},
		{"no SPIFFE ID", "hub", `connection error: desc = "transport: authentication handshake failed: x509svid: could not get leaf SPIFFE ID: certificate contains no URI SAN"`,
			[]string{"is not a federate hub", "check the address"}},
		{"unresolved", "hub", `name resolver error: produced zero addresses`, []string{"does not resolve"}},
		{"another cluster", "control plane", `connection error: desc = "transport: authentication handshake failed: membership: the server is spiffe://shop/cluster/east, not the control plane of cluster \"west\""`,
			[]string{"answers as spiffe://shop/cluster/east", `not as the control plane of cluster "west"`}},
		{"other", "hub", `something else`, []string{"something else"}},
	}
	for _, tc := range cases {
		got := ExplainUnreachable(tc.role, "127.0.0.1:1", tc.msg)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", tc.name, got, w)
			}
		}
	}
}
