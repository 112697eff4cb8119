package agent

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/testing/protocmp"
	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/federate/federate/trust"
)

// What WriteBootstrap writes, LoadBootstrap and ReadToken read back.
func TestBootstrapRoundTrip(t *testing.T) {
	roots := newDomain(t, "shop").auth.Bundle().X509Authorities()
	cfg := BootstrapConfig{
		Mesh: "shop", Cluster: "central", Network: "net-central", Namespace: "cafe", Group: "barista",
		ServiceAccount: "barista", TrustDomain: "central.shop",
		Labels:  map[string]string{"app": "espresso", "version": "v2", "quote": `it's "fine"`},
		Ports:   map[string]uint32{"http": 8080, "grpc": 9090},
		Address: "192.0.2.7",
		Gateway: netip.MustParseAddrPort("198.51.100.1:15443"), ControlPlaneID: spiffeid.RequireFromString("spiffe://shop/cluster/central"),
		Probe: &networkingpb.ReadinessProbe{PeriodSeconds: 2, HealthCheckMethod: &networkingpb.ReadinessProbe_HttpGet{
			HttpGet: &networkingpb.HTTPHealthCheckConfig{Path: "/ready", Port: 8080},
		}},
		Roots: trust.EncodeCertificates(roots...),
		Token: "fedvm1.claims.signature",
	}
	dir := filepath.Join(t.TempDir(), "bootstrap")
	if err := WriteBootstrap(dir, cfg); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBootstrap(dir)
	if err != nil {
		t.Fatal(err)
	}
	host := ControlPlaneHost("central")
	got := Bootstrap{
		Dir: b.Dir, ControlPlane: b.ControlPlane, ControlPlaneID: b.ControlPlaneID, Cluster: b.Cluster, Network: b.Network,
		Namespace: b.Namespace, Group: b.Group, ID: b.ID, Address: b.Address, Labels: b.Labels, Hosts: b.Hosts, Probe: b.Probe,
	}
	want := Bootstrap{
		Dir: dir, ControlPlane: host + ":15443", ControlPlaneID: cfg.ControlPlaneID, Cluster: "central", Network: "net-central",
		Namespace: "cafe", Group: "barista", ID: spiffeid.RequireFromString("spiffe://central.shop/ns/cafe/sa/barista"),
		Address: "192.0.2.7", Hosts: map[string]string{host: "198.51.100.1"}, Probe: cfg.Probe,
		// The group's labels, and the canonical ones istioctl adds.
		Labels: map[string]string{
			"app": "espresso", "version": "v2", "quote": `it's "fine"`,
			"service.istio.io/canonical-name": "espresso", "service.istio.io/canonical-revision": "v2",
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(), cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
		t.Errorf("LoadBootstrap mismatch (-want +got):\n%s", diff)
	}
	if len(b.Roots) != len(roots) || !b.Roots[0].Equal(roots[0]) {
		t.Errorf("roots: read %d certificates, want the %d written", len(b.Roots), len(roots))
	}
	for k, v := range map[string]string{"ISTIO_META_MESH_ID": "shop", "ISTIO_INBOUND_PORTS": "8080,9090", "ISTIO_SERVICE": "barista.cafe", "CANONICAL_SERVICE": "espresso", "CANONICAL_REVISION": "v2"} {
		if b.Env[k] != v {
			t.Errorf("cluster.env %s = %q, want %q", k, b.Env[k], v)
		}
	}
	if tok, err := b.ReadToken(); err != nil || tok != cfg.Token {
		t.Errorf("ReadToken = %q, %v; want %q", tok, err, cfg.Token)
	}
	if info, err := os.Stat(filepath.Join(dir, TokenFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the token file: %v, %v; want mode 0600", info, err)
	}

	// Without an address, a probe or labels, the files still read.
	cfg.Address, cfg.Probe, cfg.Labels, cfg.Ports = "", nil, nil, nil
	if err := WriteBootstrap(dir, cfg); err != nil {
		t.Fatal(err)
	}
	if b, err = LoadBootstrap(dir); err != nil {
		t.Fatal(err)
	}
	// Without labels, the group names the canonical service, as in Istio.
	wantLabels := map[string]string{"service.istio.io/canonical-name": "barista", "service.istio.io/canonical-revision": "latest"}
	if b.Address != "" || b.Probe != nil || !maps.Equal(b.Labels, wantLabels) {
		t.Errorf("minimal bootstrap read back as address %q, probe %v, labels %v; want labels %v", b.Address, b.Probe, b.Labels, wantLabels)
	}
	if b.Env["CANONICAL_SERVICE"] != "barista" || b.Env["CANONICAL_REVISION"] != "latest" {
		t.Errorf("minimal bootstrap: CANONICAL_SERVICE %q, CANONICAL_REVISION %q; want barista, latest", b.Env["CANONICAL_SERVICE"], b.Env["CANONICAL_REVISION"])
	}
}
