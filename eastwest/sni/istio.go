package sni

import (
	"fmt"
	"strconv"
	"strings"
)

const (
	istioOutbound  = "outbound"
	istioSeparator = "_."
	maxFQDNLen     = 253
	maxLabelLen    = 63
)

// Istio is a name in Istio's outbound form,
// outbound_.<port>_.<subset>_.<fqdn>: the SNI a sidecar sends to reach
// port Port of service Host, restricted to the DestinationRule subset
// Subset when it is not empty. Istio builds it in BuildDNSSrvSubsetKey.
type Istio struct {
	Port   uint16
	Subset string // empty for the whole service
	Host   string // the service's fully qualified name, e.g. reviews.default.svc.cluster.local
}

// ParseIstio parses an outbound name such as
// outbound_.9080_._.reviews.default.svc.cluster.local (no subset) or
// outbound_.9080_.v1_.reviews.default.svc.cluster.local (subset v1). It
// splits at most three times, as Istio does, because the host may itself
// contain "_.". It accepts the canonical form only: lower case, a port
// without leading zeros, a subset that is a DNS-1123 label.
func ParseIstio(name string) (Istio, error) {
	parts := strings.SplitN(name, istioSeparator, 4)
	if len(parts) != 4 || parts[0] != istioOutbound {
		return Istio{}, fmt.Errorf("%w: %q", ErrNotIstio, name)
	}
	port, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil || port == 0 || strconv.FormatUint(port, 10) != parts[1] {
		return Istio{}, fmt.Errorf("%w: port %q in %q, want 1 to 65535", ErrBadIstioName, parts[1], name)
	}
	n := Istio{Port: uint16(port), Subset: parts[2], Host: parts[3]}
	if err := n.validate(); err != nil {
		return Istio{}, fmt.Errorf("%w in %q", err, name)
	}
	return n, nil
}

// String returns the outbound name; for a valid n, ParseIstio(n.String())
// returns n.
func (n Istio) String() string {
	return istioOutbound + istioSeparator + strconv.FormatUint(uint64(n.Port), 10) +
		istioSeparator + n.Subset + istioSeparator + n.Host
}

// Validate reports whether n can be written as an outbound name that
// parses back to n.
func (n Istio) Validate() error {
	if n.Port == 0 {
		return fmt.Errorf("%w: port 0", ErrBadIstioName)
	}
	return n.validate()
}

func (n Istio) validate() error {
	if n.Subset != "" && !isDNSLabel(n.Subset) {
		return fmt.Errorf("%w: subset %q is not a DNS-1123 label", ErrBadIstioName, n.Subset)
	}
	if !isFQDN(n.Host) {
		return fmt.Errorf("%w: host %q is not a lower-case DNS name without a trailing dot", ErrBadIstioName, n.Host)
	}
	return nil
}

// isDNSLabel reports whether s is a DNS-1123 label, as Istio requires of
// subset names: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 bytes.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > maxLabelLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isFQDN reports whether s is a lower-case DNS name of labels of
// [a-z0-9_-], with no empty label and no trailing dot. '_' is allowed
// because hosts may contain it, even in "_.".
func isFQDN(s string) bool {
	if len(s) == 0 || len(s) > maxFQDNLen {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > maxLabelLen {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
