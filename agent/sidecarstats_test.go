package agent

import (
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// scrape returns every sample of c's sidecar metrics, keyed by name and
// label values: "federate_agent_sidecar_connections_total{inbound,denied}".
func scrape(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "federate_agent_sidecar_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// waitFor scrapes until every sample in want has its value: a connection
// is counted once its handler ends, a moment after its caller is done.
func waitFor(t *testing.T, c prometheus.Collector, want map[string]float64) {
	t.Helper()
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = scrape(t, c)
		if differs(got, want) == "" {
			return
		}
	}
	t.Fatalf("sidecar metrics: %s", differs(got, want))
}

func differs(got, want map[string]float64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			out = append(out, fmt.Sprintf("%s = %v (reported %v), want %v", k, g, ok, want[k]))
		}
	}
	return strings.Join(out, "; ")
}

// The sidecar counts its connections by direction and outcome, and the
// bytes the application sends and receives, from real callers: allowed,
// denied, unfederated, without a certificate, naming a port the workload
// does not serve, with the application down; and the application's own
// calls, answered, to dead endpoints only, and to a service with none.
func TestSidecarCountsItsConnections(t *testing.T) {
	f := startSidecar(t, onlyOrderPolicies(t))
	a := New(Config{StateDir: t.TempDir()})
	c := a.Collector(nil)
	if got := scrape(t, c); len(got) != 0 {
		t.Fatalf("sidecar metrics before the agent has a sidecar: %v", got)
	}
	a.sidecar.Store(f.sidecar)

	zero := map[string]float64{
		"federate_agent_sidecar_active_connections{inbound}":                 0,
		"federate_agent_sidecar_active_connections{outbound}":                0,
		"federate_agent_sidecar_connections_total{inbound,relayed}":          0,
		"federate_agent_sidecar_connections_total{inbound,handshake_failed}": 0,
		"federate_agent_sidecar_connections_total{inbound,unknown_port}":     0,
		"federate_agent_sidecar_connections_total{inbound,app_refused}":      0,
		"federate_agent_sidecar_connections_total{inbound,denied}":           0,
		"federate_agent_sidecar_connections_total{outbound,relayed}":         0,
		"federate_agent_sidecar_connections_total{outbound,no_endpoints}":    0,
		"federate_agent_sidecar_connections_total{outbound,connect_failed}":  0,
		"federate_agent_sidecar_sent_bytes_total{inbound}":                   0,
		"federate_agent_sidecar_received_bytes_total{inbound}":               0,
		"federate_agent_sidecar_sent_bytes_total{outbound}":                  0,
		"federate_agent_sidecar_received_bytes_total{outbound}":              0,
	}
	got := scrape(t, c)
	if d := differs(got, zero); d != "" || len(got) != len(zero) {
		t.Fatalf("a new sidecar's metrics: %v; %s", got, d)
	}

	// Inbound: two allowed calls, then one of each refusal.
	order := f.east.cred(t, "/ns/shop/sa/order")
	for range 2 {
		if got, err := f.dialInbound(order); err != nil || got != "barista: one latte\n" {
			t.Fatalf("east's order calling barista: %q, %v", got, err)
		}
	}
	if got, _ := f.dialInbound(f.east.cred(t, "/ns/shop/sa/inventory")); got != "" {
		t.Fatalf("a principal no rule allows got %q", got)
	}
	if _, err := f.dialInbound(f.evil.cred(t, "/ns/shop/sa/order")); err == nil {
		t.Fatal("a caller from an unfederated trust domain was answered")
	}
	if err := dialWithoutCertificate(f); err == nil {
		t.Fatal("a caller without a certificate completed the handshake")
	}
	if err := dialPort(f, order, 9999); err == nil {
		t.Fatal("a caller naming a port barista does not serve completed the handshake")
	}
	// Outbound: one answered call (past a dead endpoint).
	outbound := func() (string, error) {
		conn, err := net.Dial("tcp", f.outbound)
		if err != nil {
			t.Fatal(err)
		}
		return roundTrip(conn, "charge 4.50")
	}
	if got, err := outbound(); err != nil || got != "payment: charge 4.50\n" {
		t.Fatalf("barista calling payment: %q, %v", got, err)
	}
	want := maps.Clone(zero)
	want["federate_agent_sidecar_connections_total{inbound,relayed}"] = 2
	want["federate_agent_sidecar_connections_total{inbound,denied}"] = 1
	want["federate_agent_sidecar_connections_total{inbound,handshake_failed}"] = 2
	want["federate_agent_sidecar_connections_total{inbound,unknown_port}"] = 1
	want["federate_agent_sidecar_received_bytes_total{inbound}"] = 2 * float64(len("one latte\n"))
	want["federate_agent_sidecar_sent_bytes_total{inbound}"] = 2 * float64(len("barista: one latte\n"))
	want["federate_agent_sidecar_connections_total{outbound,relayed}"] = 1
	want["federate_agent_sidecar_sent_bytes_total{outbound}"] = float64(len("charge 4.50\n"))
	want["federate_agent_sidecar_received_bytes_total{outbound}"] = float64(len("payment: charge 4.50\n"))
	waitFor(t, c, want)

	// Then the application stops, and payment's endpoints die, then go.
	update := func(targets ...*agentpb.Target) {
		f.sidecar.Update(&agentpb.AgentConfig{
			Bundles: []*agentpb.TrustBundle{f.central.bundle(), f.east.bundle()},
			Inbound: []*agentpb.Inbound{{Hostname: "barista.shop.svc.cluster.local", Port: 8083, TargetPort: deadPort(t)}},
			Upstreams: []*agentpb.Upstream{{
				Hostname: "payment.shop.svc.cluster.local",
				Ports:    []*registrypb.Port{{Name: "http", Number: 8081}},
				Targets:  targets,
			}},
		})
	}
	update(&agentpb.Target{Cluster: "east", Address: "127.0.0.1", Ports: map[uint32]uint32{8081: deadPort(t)}, Health: registrypb.Health_HEALTHY, Weight: 1})
	if got, err := outbound(); err == nil {
		t.Fatalf("a call to dead endpoints only was answered: %q", got)
	}
	if err := dialPort(f, order, 8083); err == nil {
		t.Fatal("the handshake succeeded with the application down")
	}
	update()
	if got, err := outbound(); err == nil {
		t.Fatalf("a call to a service without endpoints was answered: %q", got)
	}
	want["federate_agent_sidecar_connections_total{inbound,app_refused}"] = 1
	want["federate_agent_sidecar_connections_total{outbound,connect_failed}"] = 1
	want["federate_agent_sidecar_connections_total{outbound,no_endpoints}"] = 1
	waitFor(t, c, want)
}

// The sidecar holds a connection as active while its bytes flow, and
// counts bytes as they pass, before the connection ends.
func TestSidecarCountsActiveConnectionsAndBytesAsTheyFlow(t *testing.T) {
	f := startSidecar(t, nil)
	a := New(Config{StateDir: t.TempDir()})
	a.sidecar.Store(f.sidecar)
	c := a.Collector(nil)

	conf := tlsconfig.MTLSClientConfig(f.east.cred(t, "/ns/shop/sa/order"), trust.UnionBundles{trust.Bundle(f.central.td, f.central.auth.Bundle().X509Authorities()...)}, tlsconfig.AuthorizeAny())
	conf.ServerName = sni.Istio{Port: 8083, Host: "barista.shop.svc.cluster.local"}.String()
	conn, err := tls.Dial("tcp", f.sidecar.inbound.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The application answers once it has a whole line: half a line is
	// with it, and the connection is open.
	if _, err := conn.Write([]byte("half a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, map[string]float64{
		"federate_agent_sidecar_active_connections{inbound}":        1,
		"federate_agent_sidecar_received_bytes_total{inbound}":      float64(len("half a")),
		"federate_agent_sidecar_connections_total{inbound,relayed}": 0,
	})
	if got, err := roundTrip(conn, " latte"); err != nil || got != "barista: half a latte\n" {
		t.Fatalf("the answer: %q, %v", got, err)
	}
	waitFor(t, c, map[string]float64{
		"federate_agent_sidecar_active_connections{inbound}":        0,
		"federate_agent_sidecar_connections_total{inbound,relayed}": 1,
	})
}

// dialWithoutCertificate calls barista with TLS but no client certificate.
func dialWithoutCertificate(f *sidecarFixture) error {
	conf := &tls.Config{InsecureSkipVerify: true, ServerName: sni.Istio{Port: 8083, Host: "barista.shop.svc.cluster.local"}.String()}
	conn, err := tls.Dial("tcp", f.sidecar.inbound.Addr().String(), conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	// TLS 1.3: the server's refusal of the client's (missing) certificate
	// arrives after the client's side of the handshake is done.
	_, err = roundTrip(conn, "one latte")
	return err
}

// dialPort calls barista's service port port as cred, and fails if the
// handshake does.
func dialPort(f *sidecarFixture, cred *trust.Credential, port uint16) error {
	conf := tlsconfig.MTLSClientConfig(cred, trust.UnionBundles{trust.Bundle(f.central.td, f.central.auth.Bundle().X509Authorities()...)}, tlsconfig.AuthorizeAny())
	conf.ServerName = sni.Istio{Port: port, Host: "barista.shop.svc.cluster.local"}.String()
	conn, err := tls.Dial("tcp", f.sidecar.inbound.Addr().String(), conf)
	if err != nil {
		return err
	}
	return conn.Close()
}
