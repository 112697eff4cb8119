package controlplane_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/proxyless"
	"github.com/federate/federate/registry"
)

// The proxyless scenario: a caller in west (r1/z1) built only from
// docs/proxyless-grpc.md (the bootstrap 'federate xds bootstrap' writes,
// the SVID files of 'federate-agent svid', xDS credentials, xds:///
// targets) calls three services. order runs in east (r1/z2) and central
// (r2/z1) and west's DestinationRule distributes it 80/20; payment runs in
// east and central and fails over from r1 to r2; stock runs in west itself
// and in east. Every backend is a gRPC server that requires a federated
// client SVID; remote ones are reached through their cluster's gateway.

const proxylessRules = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: shop}
spec:
  host: order.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: r1/z1/*
          to: {"r1/z2/*": 80, "r2/z1/*": 20}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: shop}
spec:
  host: payment.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: stock, namespace: shop}
spec:
  host: stock.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}
`

var proxylessTargets = []string{"order.shop.svc.cluster.local:9090", "payment.shop.svc.cluster.local:9090", "stock.shop.svc.cluster.local:9090"}

type proxylessMesh struct {
	cps      map[string]*fedtest.ControlPlane
	gateways map[string]*fedtest.Gateway
	gwAddr   map[string]string
	backends map[string]*grpcBackend // by "service/cluster"
	caller   *callerProcess
	svidDir  string
}

func startProxylessMesh(t *testing.T) *proxylessMesh {
	tm := fedtest.NewMesh(t, failoverTimers)
	pm := &proxylessMesh{cps: map[string]*fedtest.ControlPlane{}, gateways: map[string]*fedtest.Gateway{}, gwAddr: map[string]string{}, backends: map[string]*grpcBackend{}}
	sources := map[string]*fedtest.Source{}
	for _, name := range []string{"west", "east", "central"} {
		tm.Join(name)
		lis := fedtest.GatewayListener(t)
		cfg := controlplane.Config{Gateway: lis.Addr().String(), Locality: failoverLocality[name], ConfigDir: t.TempDir()}
		if name == "west" {
			if err := os.WriteFile(filepath.Join(cfg.ConfigDir, "rules.yaml"), []byte(proxylessRules), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg.ServingNames = []string{"127.0.0.1"}
		}
		sources[name] = fedtest.NewSource()
		cfg.Source = sources[name]
		pm.cps[name] = tm.StartControlPlane(name, cfg)
		pm.gwAddr[name] = lis.Addr().String()
		pm.gateways[name] = tm.StartGateway(pm.cps[name], lis, nil)
	}
	deployed := map[string][]string{"west": {"stock"}, "east": {"order", "payment", "stock"}, "central": {"order", "payment"}}
	for cluster, services := range deployed {
		var svcs []*registry.Service
		for _, svc := range services {
			b := startGRPCBackend(t, pm.cps[cluster], svc, 0)
			pm.backends[svc+"/"+cluster] = b
			svcs = append(svcs, grpcService(svc, b.endpoint(cluster, svc, failoverLocality[cluster])))
		}
		sources[cluster].Set(svcs...)
	}

	// The page's steps: the SVID files, then the bootstrap, then the caller.
	cfgDir, svidDir := t.TempDir(), t.TempDir()
	pm.svidDir = svidDir
	tm.WorkloadBootstrap(pm.cps["west"], "shop", "client", "client", cfgDir)
	tm.StartSVIDAgent(cfgDir, svidDir, 5*time.Second)
	bootstrap := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(bootstrap, fedtest.ProxylessBootstrap(t, fedtest.ServingAddr(pm.cps["west"]), "shop", "client", svidDir, time.Minute), 0o644); err != nil {
		t.Fatal(err)
	}
	pm.caller = startCaller(t, bootstrap, proxylessTargets...)
	return pm
}

// clusterOf is the cluster whose SVID answered: <cluster>.shop.
func clusterOf(r proxyless.Result) string {
	if r.Err != "" {
		return ""
	}
	td, _, _ := strings.Cut(strings.TrimPrefix(r.Server, "spiffe://"), "/")
	return strings.TrimSuffix(td, ".shop")
}

// count returns the answers of the last n RPCs to target after from, by
// cluster ("" for a failure), once there are n.
func (pm *proxylessMesh) count(from time.Time, target string, n int) (map[string]int, bool) {
	rs := pm.caller.since(from, target)
	if len(rs) < n {
		return nil, false
	}
	out := map[string]int{}
	for _, r := range rs[len(rs)-n:] {
		out[clusterOf(r)]++
	}
	return out, true
}

// steadyOn waits until the last n RPCs to target after from were all
// answered by cluster, and returns when the first of them after from was.
func (pm *proxylessMesh) steadyOn(t *testing.T, from time.Time, target, cluster string, n int, timeout time.Duration) time.Time {
	t.Helper()
	fedtest.Eventually(t, timeout, fmt.Sprintf("%d RPCs to %s in a row answered by %s", n, target, cluster), func() bool {
		got, ok := pm.count(from, target, n)
		return ok && got[cluster] == n
	})
	for _, r := range pm.caller.since(from, target) {
		if clusterOf(r) == cluster {
			return r.End
		}
	}
	return time.Time{}
}

// failures counts the failed RPCs to target that started in [from, to).
func (pm *proxylessMesh) failures(from, to time.Time, target string) (failed, total int, first string) {
	for _, r := range pm.caller.since(from, target) {
		if !r.Start.Before(to) {
			break
		}
		total++
		if r.Err != "" {
			failed++
			if first == "" {
				first = fmt.Sprintf("%s in: %s", r.Start.Sub(from).Round(time.Millisecond), r.Err)
			}
		}
	}
	return failed, total, first
}

// Acceptance for docs/proxyless-grpc.md: the recipe's client reaches three
// services across clusters with mTLS both ways, balances by the
// DestinationRule, goes local first, and fails over when the local or
// the nearest remote backend dies, within bounds.
func TestIntegrationProxylessGRPCFromTheDocs(t *testing.T) {
	t.Parallel()
	pm := startProxylessMesh(t)
	order, payment, stock := proxylessTargets[0], proxylessTargets[1], proxylessTargets[2]
	begin := time.Now()
	pm.steadyOn(t, begin, payment, "east", 50, 30*time.Second)
	pm.steadyOn(t, begin, stock, "west", 50, 10*time.Second)

	// The bootstrap's other way to the control plane, through the
	// gateway by its internal name, with the same files and the same
	// checks as grpc-go's "tls" channel credentials (only the name
	// resolution, /etc/hosts, is left out).
	svid, err := tls.LoadX509KeyPair(filepath.Join(pm.svidDir, agent.SVIDPEMFile), filepath.Join(pm.svidDir, agent.SVIDPEMFile))
	if err != nil {
		t.Fatal(err)
	}
	cpRoots := x509.NewCertPool()
	pemRoots, err := os.ReadFile(filepath.Join(pm.svidDir, agent.ControlPlaneCAFile))
	if err != nil || !cpRoots.AppendCertsFromPEM(pemRoots) {
		t.Fatalf("%s: %v", agent.ControlPlaneCAFile, err)
	}
	viaGateway := &tls.Config{ServerName: "controlplane.west.federate.internal", RootCAs: cpRoots, Certificates: []tls.Certificate{svid}}
	if resp, err := ads(t, pm.gwAddr["west"], viaGateway, xds.ClientNodeID("127.0.0.1", "client", "shop")); err != nil || len(resp) == 0 {
		t.Fatalf("xDS through west's gateway by controlplane.west.federate.internal: %v", err)
	}

	// Order's channel reaches both its clusters before anything is
	// measured: a connection still being made under load may keep an RPC
	// waiting past its 1 s deadline, which is not what this test is about.
	fedtest.Eventually(t, 30*time.Second, "50 RPCs to order in a row answered, by east and central", func() bool {
		got, ok := pm.count(begin, order, 50)
		return ok && got[""] == 0 && got["east"] > 0 && got["central"] > 0
	})

	// Balancing: 1000 RPCs to each service.
	measured := time.Now()
	const n = 1000
	var shares map[string]int
	fedtest.Eventually(t, 2*time.Minute, fmt.Sprintf("%d RPCs to each service", n), func() bool {
		var ok bool
		shares, ok = pm.count(measured, order, n)
		_, ok2 := pm.count(measured, stock, n)
		_, ok3 := pm.count(measured, payment, n)
		return ok && ok2 && ok3
	})
	pay, _ := pm.count(measured, payment, n)
	stk, _ := pm.count(measured, stock, n)
	t.Logf("balancing over %d RPCs each: order %v (rule 80/20 east/central), payment %v, stock %v", n, shares, pay, stk)
	if east := 100 * float64(shares["east"]) / n; east < 72 || east > 88 || shares["central"]+shares["east"] != n {
		t.Errorf("order: %v, want 80%% ± 8 on east, the rest on central, no failure", shares)
	}
	if pay["east"] != n || stk["west"] != n {
		t.Errorf("payment %v, stock %v: want all on east (nearest) and all on west (local)", pay, stk)
	}

	// The local backend of stock dies: the channel moves to east.
	stopped := time.Now()
	pm.backends["stock/west"].stop()
	moved := pm.steadyOn(t, stopped, stock, "east", 100, 15*time.Second)
	localMove := moved.Sub(stopped)
	// Failures until the 100 in a row on east: any flapping counts.
	localFailed, localTotal, _ := pm.failures(stopped, time.Now(), stock)

	// The nearest remote backend of payment dies behind east's gateway:
	// the channel moves to central.
	stopped = time.Now()
	pm.backends["payment/east"].stop()
	moved = pm.steadyOn(t, stopped, payment, "central", 100, 15*time.Second)
	remoteMove := moved.Sub(stopped)
	remoteFailed, remoteTotal, _ := pm.failures(stopped, time.Now(), payment)
	t.Logf("stock's local backend stopped: on east after %v; %d of %d RPCs failed until 100 in a row on east", localMove.Round(time.Millisecond), localFailed, localTotal)
	t.Logf("payment's east backend stopped: on central after %v; %d of %d RPCs failed until 100 in a row on central", remoteMove.Round(time.Millisecond), remoteFailed, remoteTotal)
	if localMove > 2*time.Second || localFailed > 5 {
		t.Errorf("local failover took %v with %d failed RPCs, want within 2s and at most 5", localMove, localFailed)
	}
	if remoteMove > 3*time.Second || remoteFailed > 5 {
		t.Errorf("remote failover took %v with %d failed RPCs, want within 3s and at most 5", remoteMove, remoteFailed)
	}
	// Remote calls crossed the remote gateways by the clusters' SNI.
	for _, cluster := range []string{"east", "central"} {
		if sni := xds.ClusterName(9090, "", "order.shop.svc.cluster.local"); pm.gateways[cluster].Routed(sni) == 0 {
			t.Errorf("%s's gateway routed no connection for %s", cluster, sni)
		}
	}
	// order was untouched meanwhile.
	if failed, total, first := pm.failures(measured, time.Now(), order); failed != 0 {
		t.Errorf("%d of %d RPCs to order failed, want none; the first, %s", failed, total, first)
	}
	for key, b := range pm.backends {
		callers, _ := b.seen()
		for id := range callers {
			if id != "spiffe://west.shop/ns/shop/sa/client" {
				t.Errorf("%s was called by %s, want only west's client", key, id)
			}
		}
	}
}
