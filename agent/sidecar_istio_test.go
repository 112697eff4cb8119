package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/federate/federate/agent/agentpb"

	"github.com/google/go-cmp/cmp"
)

// baristaSidecar is the Istio Sidecar of the barista VM, as kubectl would
// print it: it imports payment and order on loopback and takes mTLS on
// 15006 for the application on 127.0.0.1:%d.
const baristaSidecar = `# /etc/federate/sidecar.yaml on the barista VM
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: barista-vm
  namespace: shop
  creationTimestamp: null
spec:
  workloadSelector:
    labels: {app: barista}
  ingress:
  - port: {number: 15006, protocol: TLS, name: mtls}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:%d
  egress:
  - port: {number: 8081, protocol: HTTP, name: http-payment}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["shop/payment.shop.svc.cluster.local"]
  - port: {number: 8080, protocol: HTTP, name: http-order}
    bind: 127.0.0.2
    captureMode: NONE
    hosts: ["*/order.shop.svc.cluster.local"]
`

func writeSidecarFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), SidecarFile)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadSidecarConfigFromIstioSidecar(t *testing.T) {
	c, err := LoadSidecarConfig(writeSidecarFile(t, fmt.Sprintf(baristaSidecar, 18083)))
	if err != nil {
		t.Fatal(err)
	}
	want := &SidecarConfig{Outbound: []Outbound{
		{Host: "payment.shop.svc.cluster.local", Port: 8081, Listen: "127.0.0.1:8081"},
		{Host: "order.shop.svc.cluster.local", Port: 8080, Listen: "127.0.0.2:8080"},
	}}
	want.Inbound.Listen, want.Inbound.AppHost, want.Inbound.AppPort = "127.0.0.1:15006", "127.0.0.1", 18083
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

// The old private format still reads, and says it is deprecated; an empty
// file is the defaults, and is not.
func TestLoadSidecarConfigOldFormat(t *testing.T) {
	c, err := LoadSidecarConfig(writeSidecarFile(t, "inbound:\n  listen: 0.0.0.0:15006\noutbound:\n- {host: payment.shop.svc.cluster.local, port: 8081}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Deprecated == "" || !strings.Contains(c.Deprecated, "Istio Sidecar") {
		t.Errorf("old format: Deprecated = %q, want the line saying to write a Sidecar", c.Deprecated)
	}
	if len(c.Outbound) != 1 || c.Outbound[0].Listen != "127.0.0.1:8081" {
		t.Errorf("old format: outbound = %+v", c.Outbound)
	}
	c, err = LoadSidecarConfig(writeSidecarFile(t, "# nothing imported yet\n"))
	if err != nil || c.Deprecated != "" || c.Inbound.Listen != DefaultInboundListen {
		t.Errorf("empty file: %+v, %v; want the defaults, not deprecated", c, err)
	}
}

func TestLoadSidecarConfigIstioErrors(t *testing.T) {
	sidecar := func(spec string) string {
		return "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: vm, namespace: shop}\nspec:\n" + spec
	}
	tests := []struct{ name, file, want string }{
		{"capture", sidecar("  egress: [{port: {number: 80}, hosts: [./a.shop.svc.cluster.local], captureMode: IPTABLES}]\n"),
			"Sidecar shop/vm: spec.egress[0].captureMode IPTABLES: the VM sidecar does not capture traffic"},
		{"two hosts", sidecar("  egress: [{port: {number: 80}, hosts: [./a.example.internal, ./b.example.internal]}]\n"),
			"spec.egress[0].hosts lists 2 hosts"},
		{"wildcard host", sidecar("  egress: [{port: {number: 80}, hosts: [\"istio-system/*\"]}]\n"),
			`spec.egress[0].hosts[0] "istio-system/*": want namespace/hostname of one service`},
		{"no port", sidecar("  egress: [{hosts: [./a.example.internal]}]\n"),
			"spec.egress[0].port.number 0"},
		{"two ingress listeners", sidecar("  ingress: [{port: {number: 15006}}, {port: {number: 15007}}]\n"),
			"spec.ingress has 2 listeners"},
		{"remote defaultEndpoint", sidecar("  ingress: [{port: {number: 15006}, defaultEndpoint: 10.0.0.1:80}]\n"),
			"the application listens on this VM"},
		{"another kind", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: x}\n",
			"only an Istio Sidecar (networking.istio.io) belongs in sidecar.yaml"},
		{"a misspelt field", sidecar("  egres: []\n"), `unknown field "egres"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeSidecarFile(t, tt.file)
			_, err := LoadSidecarConfig(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadSidecarConfig error %v, want one naming %s and saying %q", err, path, tt.want)
			}
		})
	}
}

// A sidecar configured by an Istio Sidecar serves both ways: the egress
// listener originates mTLS to payment, and a federated caller reaches the
// application at the ingress defaultEndpoint, with no port mapping from the
// control plane. Listen addresses move to free ports: tests never assume
// 8081 is free.
func TestSidecarFromIstioSidecarServes(t *testing.T) {
	f := startSidecarFrom(t, nil, baristaSidecarOnFreePorts(t))
	got, err := f.dialInbound(f.east.cred(t, "/ns/shop/sa/order"))
	if err != nil || got != "barista: one latte\n" {
		t.Fatalf("east's order calling barista through the defaultEndpoint: %q, %v", got, err)
	}
	c, err := net.Dial("tcp", f.outbound)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "charge 4.50"); err != nil || got != "payment: charge 4.50\n" {
		t.Fatalf("barista calling payment through its egress listener: %q, %v", got, err)
	}
}

// baristaSidecarOnFreePorts loads baristaSidecar for an application on
// appPort, its listeners moved to free ports, with payment's egress only.
func baristaSidecarOnFreePorts(t *testing.T) func(appPort uint32) *SidecarConfig {
	return func(appPort uint32) *SidecarConfig {
		c, err := LoadSidecarConfig(writeSidecarFile(t, fmt.Sprintf(baristaSidecar, appPort)))
		if err != nil {
			t.Fatal(err)
		}
		c.Inbound.Listen = "127.0.0.1:0"
		c.Outbound = c.Outbound[:1]
		c.Outbound[0].Listen = "127.0.0.1:0"
		return c
	}
}

// The control plane's port mapping wins over the defaultEndpoint where the
// WorkloadGroup or the service maps the port; where neither does, the
// defaultEndpoint serves it.
func TestSidecarDefaultEndpointTakesWhatIsNotMapped(t *testing.T) {
	f := startSidecarFrom(t, nil, baristaSidecarOnFreePorts(t))
	dead := deadPort(t)
	for _, tc := range []struct {
		name   string
		in     *agentpb.Inbound
		served bool
	}{
		{"unmapped", &agentpb.Inbound{Hostname: "barista.shop.svc.cluster.local", Port: 8083, TargetPort: dead, DefaultTarget: true}, true},
		{"mapped elsewhere", &agentpb.Inbound{Hostname: "barista.shop.svc.cluster.local", Port: 8083, TargetPort: dead}, false},
	} {
		f.sidecar.Update(&agentpb.AgentConfig{Bundles: []*agentpb.TrustBundle{f.central.bundle(), f.east.bundle()}, Inbound: []*agentpb.Inbound{tc.in}})
		got, err := f.dialInbound(f.east.cred(t, "/ns/shop/sa/order"))
		if served := err == nil && got == "barista: one latte\n"; served != tc.served {
			t.Errorf("%s: the application answered %q (%v), want served %v", tc.name, got, err, tc.served)
		}
	}
}
