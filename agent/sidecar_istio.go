package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/federate/federate/registry/file"
)

// deprecatedSidecarFormat is logged when sidecar.yaml is in federate's
// old private format rather than an Istio Sidecar.
const deprecatedSidecarFormat = "sidecar.yaml is in federate's old private format (inbound.listen, outbound[]), which is deprecated: " +
	"write an Istio Sidecar resource instead (egress listeners with bind: 127.0.0.1 and captureMode: NONE, an ingress listener with defaultEndpoint); see docs/vms.md"

// parseSidecarFile reads sidecar.yaml in either form: an Istio Sidecar
// resource (networking.istio.io), or the old private format. ok is false
// when the file holds no Kubernetes object, for the caller to read the old
// format.
func parseSidecarFile(path string, data []byte) (c *SidecarConfig, ok bool, err error) {
	objs, err := file.Decode(path, data)
	switch {
	case err != nil && isOldSidecarFormat(data):
		return nil, false, nil
	case err != nil:
		return nil, true, err
	case len(objs) == 0:
		return new(SidecarConfig), true, nil // nothing written: the defaults
	}
	var sidecar *file.Object
	for _, o := range objs {
		if o.Kind != file.KindSidecar {
			return nil, true, fmt.Errorf("%s: %s: only an Istio Sidecar (networking.istio.io) belongs in sidecar.yaml", path, o.Ref())
		}
		if sidecar != nil {
			return nil, true, fmt.Errorf("%s: %s and %s: write one Sidecar for the VM", path, sidecar.Ref(), o.Ref())
		}
		sidecar = o
	}
	spec, _ := sidecar.SpecProto().(*networkingpb.Sidecar)
	c, err = sidecarFromIstio(spec)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %s: %w", path, sidecar.Ref(), err)
	}
	return c, true, nil
}

// isOldSidecarFormat reports whether data is a mapping without a kind:
// the old private format, rather than a Kubernetes object.
func isOldSidecarFormat(data []byte) bool {
	obj, err := file.DecodeObject(data)
	return err == nil && obj != nil && obj.Kind == ""
}

// sidecarFromIstio maps an Istio Sidecar onto the VM sidecar's listeners.
// The VM has no traffic capture, so every listener says captureMode NONE
// (or nothing) and binds an address: each egress listener is one imported
// service's plaintext loopback listener (bind, default 127.0.0.1, and the
// service's port number; hosts names the one service), and the one ingress
// listener is the mTLS listener callers reach (bind, default 0.0.0.0),
// whose defaultEndpoint is where the application listens.
func sidecarFromIstio(spec *networkingpb.Sidecar) (*SidecarConfig, error) {
	c := new(SidecarConfig)
	switch n := len(spec.GetIngress()); {
	case n > 1:
		return nil, fmt.Errorf("spec.ingress has %d listeners: the VM sidecar has one mTLS listener for all the workload's ports; keep one", n)
	case n == 1:
		in := spec.GetIngress()[0]
		if err := checkCapture(in.GetCaptureMode()); err != nil {
			return nil, fmt.Errorf("spec.ingress[0].%w", err)
		}
		port := in.GetPort().GetNumber()
		if port == 0 || port > 65535 {
			return nil, fmt.Errorf("spec.ingress[0].port.number %d: set the port callers reach, such as 15006", port)
		}
		bind := in.GetBind()
		if bind == "" {
			bind = "0.0.0.0"
		}
		if _, err := netip.ParseAddr(bind); err != nil {
			return nil, fmt.Errorf("spec.ingress[0].bind %q: want an IP address, such as 0.0.0.0", bind)
		}
		c.Inbound.Listen = net.JoinHostPort(bind, strconv.Itoa(int(port)))
		if ep := in.GetDefaultEndpoint(); ep != "" {
			host, p, err := loopbackEndpoint(ep)
			if err != nil {
				return nil, fmt.Errorf("spec.ingress[0].defaultEndpoint %q: %w", ep, err)
			}
			c.Inbound.AppHost, c.Inbound.AppPort = host, p
		}
	}
	for i, eg := range spec.GetEgress() {
		if err := checkCapture(eg.GetCaptureMode()); err != nil {
			return nil, fmt.Errorf("spec.egress[%d].%w", i, err)
		}
		port := eg.GetPort().GetNumber()
		if port == 0 || port > 65535 {
			return nil, fmt.Errorf("spec.egress[%d].port.number %d: set the imported service's port: the VM sidecar has no capture to learn it", i, port)
		}
		bind := eg.GetBind()
		if bind == "" {
			bind = "127.0.0.1"
		}
		if _, err := netip.ParseAddr(bind); err != nil {
			return nil, fmt.Errorf("spec.egress[%d].bind %q: want an IP address, such as 127.0.0.1", i, bind)
		}
		if len(eg.GetHosts()) != 1 {
			return nil, fmt.Errorf("spec.egress[%d].hosts lists %d hosts: a listener without capture serves one service: write one egress listener per service", i, len(eg.GetHosts()))
		}
		_, host, found := strings.Cut(eg.GetHosts()[0], "/")
		if !found || host == "" || strings.Contains(host, "*") {
			return nil, fmt.Errorf("spec.egress[%d].hosts[0] %q: want namespace/hostname of one service, such as \"*/payment.shop.svc.cluster.local\"", i, eg.GetHosts()[0])
		}
		c.Outbound = append(c.Outbound, Outbound{Host: host, Port: port, Listen: net.JoinHostPort(bind, strconv.Itoa(int(port)))})
	}
	return c, nil
}

// checkCapture refuses traffic capture, which the VM sidecar does not do.
func checkCapture(m networkingpb.CaptureMode) error {
	if m == networkingpb.CaptureMode_IPTABLES {
		return errors.New("captureMode IPTABLES: the VM sidecar does not capture traffic; use captureMode: NONE with bind")
	}
	return nil
}

// loopbackEndpoint parses a defaultEndpoint, "127.0.0.1:PORT" or
// "0.0.0.0:PORT" in Istio's words; the application is reached on loopback.
func loopbackEndpoint(ep string) (string, uint32, error) {
	if strings.HasPrefix(ep, "unix://") {
		return "", 0, errors.New("a Unix domain socket is not supported: use 127.0.0.1:PORT")
	}
	h, p, err := net.SplitHostPort(ep)
	if err != nil {
		return "", 0, fmt.Errorf("want 127.0.0.1:PORT: %v", err)
	}
	a, err := netip.ParseAddr(h)
	if err != nil || !a.IsLoopback() && !a.IsUnspecified() {
		return "", 0, errors.New("want 127.0.0.1:PORT or 0.0.0.0:PORT: the application listens on this VM")
	}
	if a.IsUnspecified() {
		h = "127.0.0.1"
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("port %q: want 1-65535", p)
	}
	return h, uint32(port), nil
}
