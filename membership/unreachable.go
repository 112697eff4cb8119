package membership

import (
	"fmt"
	"regexp"
	"strings"
)

// bundleTD finds the trust domain a server's certificate named when the
// caller holds no bundle for it.
// gRPC's status message quotes the transport error, so its quotes may be
// escaped.
var bundleTD = regexp.MustCompile(`no X\.509 bundle found for trust domain: \\?"([^"\\]*)\\?"`)

// notControlPlane finds authorizeControlPlane's refusal.
var notControlPlane = regexp.MustCompile(`the server is (\S+), not the control plane of cluster \\?"([^"\\]*)\\?"`)

// ExplainUnreachable turns the message of a call that never reached the
// server (gRPC's Unavailable: refused, not TLS, not gRPC, another mesh)
// into what went wrong and what to check. role names the server ("hub",
// "control plane") and addr the address dialled. A message it does not
// recognise comes back as it is.
func ExplainUnreachable(role, addr, msg string) string {
	switch {
	case notControlPlane.MatchString(msg):
		m := notControlPlane.FindStringSubmatch(msg)
		return fmt.Sprintf("%s answers as %s, not as the control plane of cluster %q: pass the address of %s's control plane (or of its gateway), or the cluster that address belongs to",
			addr, m[1], m[2], m[2])
	case strings.Contains(msg, "connection refused"):
		return fmt.Sprintf("nothing listens at %s (connection refused): check that the %s runs and that %s is its gRPC address (%s)",
			addr, role, addr, listenFlag(role))
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Sprintf("%s does not speak TLS, so it is not the %s's gRPC address (%s); metrics, health and gossip listen on other ports",
			addr, role, listenFlag(role))
	case strings.Contains(msg, "missing selected ALPN property"):
		return fmt.Sprintf("%s speaks TLS but not gRPC, so it is not the %s's gRPC address (%s); the SPIFFE bundle endpoint, say, listens elsewhere",
			addr, role, listenFlag(role))
	case strings.Contains(msg, "no X.509 bundle found for trust domain"):
		other := "another mesh"
		if m := bundleTD.FindStringSubmatch(msg); m != nil {
			other = fmt.Sprintf("mesh %q", m[1])
		}
		return fmt.Sprintf("the %s at %s belongs to %s, not to the mesh of the credential: pass a credential of that mesh (its hub's admin.pem), or the address of your mesh's %s",
			role, addr, other, role)
	case strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Sprintf("the %s at %s presents a certificate the mesh CA (--ca, or ca.pem beside the credential) did not sign: it belongs to another mesh, or the CA file is of another mesh",
			role, addr)
	case strings.Contains(msg, "certificate contains no URI SAN"), strings.Contains(msg, "could not get leaf SPIFFE ID"):
		return fmt.Sprintf("%s is not a federate %s: its certificate has no SPIFFE ID; check the address", addr, role)
	case strings.Contains(msg, "produced zero addresses"), strings.Contains(msg, "no such host"):
		return fmt.Sprintf("%s does not resolve: want HOST:PORT with a host name that resolves, or an IP address", addr)
	}
	return msg
}

// listenFlag names the flag that sets role's gRPC address, and its
// default port.
func listenFlag(role string) string {
	if role == "hub" {
		return "'federate hub --listen', port 15012 by default"
	}
	return "'federate controlplane --listen', port 15013 by default, or its gateway's 15443"
}
