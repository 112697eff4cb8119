package fedtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/membership"
)

// WorkloadBootstrap records a WorkloadGroup ns/group whose service account
// is sa with cp's cluster and writes its bootstrap files into dir, as
// 'federate vm configure' does, for a host that reaches the control plane
// at its own address (the hosts file maps the internal name there).
func (tm *Mesh) WorkloadBootstrap(cp *ControlPlane, ns, group, sa, dir string) {
	tb := tm.t
	tb.Helper()
	cluster := cp.Member().Cluster()
	conn, err := membership.DialControlPlane(cp.Member().Addr(), cluster,
		filepath.Join(cp.Dir, membership.CredentialFile), filepath.Join(cp.Dir, membership.CAFile))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spec := fmt.Sprintf(`{"template": {"serviceAccount": %q}}`, sa)
	resp, err := agentpb.NewWorkloadsClient(conn).CreateBootstrap(ctx, &agentpb.CreateBootstrapRequest{
		Namespace: ns, Name: group, SpecJson: []byte(spec), TtlSeconds: 600,
	})
	if err != nil {
		tb.Fatalf("create the bootstrap of %s/%s in %s: %v", ns, group, cluster, err)
	}
	addr, err := netip.ParseAddrPort(cp.Member().Addr())
	if err != nil {
		tb.Fatal(err)
	}
	if err := agent.WriteBootstrap(dir, agent.BootstrapConfig{
		Mesh: resp.GetMesh(), Cluster: cluster, Network: resp.GetNetwork(), Namespace: ns, Group: group,
		ServiceAccount: sa, TrustDomain: resp.GetTrustDomain(), Address: "127.0.0.1", Gateway: addr,
		ControlPlaneID: spiffeid.RequireFromString(resp.GetControlPlaneId()), Roots: resp.GetRootCerts(), Token: resp.GetToken(),
	}); err != nil {
		tb.Fatal(err)
	}
}

// StartSVIDAgent runs 'federate-agent svid' in process: the agent's SVID
// mode over the bootstrap files in configDir, writing the application's
// files into svidDir. It returns once they are written.
func (tm *Mesh) StartSVIDAgent(configDir, svidDir string, bundleRefresh time.Duration) (stop func()) {
	tb := tm.t
	tb.Helper()
	ready := make(chan struct{})
	a := agent.New(agent.Config{
		ConfigDir: configDir, StateDir: tb.TempDir(), SVIDDir: svidDir, BundleRefresh: bundleRefresh,
		Logger: tm.log.With("node", "svid-agent"), Ready: func() { close(ready) },
	})
	stop = Start(tb, a.RunSVID, ready)
	tb.Cleanup(stop)
	return stop
}

// ProxylessBootstrap is the bootstrap 'federate xds bootstrap
// --control-plane server --namespace ns --name name --ip 127.0.0.1
// --svid-dir svidDir --refresh-interval refresh' writes (cmd/federate's
// tests hold the command to it).
func ProxylessBootstrap(tb testing.TB, server, ns, name, svidDir string, refresh time.Duration) []byte {
	tb.Helper()
	data, err := ProxylessBootstrapConfig(server, ns, name, "127.0.0.1", svidDir, refresh).JSON()
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// ProxylessBootstrapConfig is the bootstrap of ProxylessBootstrap, for any
// IP address.
func ProxylessBootstrapConfig(server, ns, name, ip, svidDir string, refresh time.Duration) xds.GRPCBootstrap {
	svid := filepath.Join(svidDir, agent.SVIDPEMFile)
	return xds.GRPCBootstrap{
		Server: server, Namespace: ns, Name: name, IP: ip,
		CertificateFile: svid, KeyFile: svid,
		RootsFile:             filepath.Join(svidDir, agent.BundleFile),
		ControlPlaneRootsFile: filepath.Join(svidDir, agent.ControlPlaneCAFile),
		RefreshInterval:       refresh,
	}
}

// ServingAddr is the control plane's address as a proxyless client dials
// it: 127.0.0.1:<port>, which its certificate carries when the control
// plane was started with ServingNames 127.0.0.1.
func ServingAddr(cp *ControlPlane) string {
	_, port, _ := net.SplitHostPort(cp.Member().Addr())
	return net.JoinHostPort("127.0.0.1", port)
}
