package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/internal/proxyless"
)

// The proxyless gRPC part of the scenario (docs/proxyless-grpc.md):
// ledger, a gRPC service in east and central, each instance serving mTLS
// with the files of its own 'federate-agent svid', and a caller in west
// built from the page's recipe alone: its SVID files from 'federate-agent
// svid', its bootstrap from 'federate xds bootstrap', GRPC_XDS_BOOTSTRAP,
// xds:///ledger.shop.svc.cluster.local:9090. West's DestinationRule sends
// it to east first (us-west fails over to us-east), then to central.

const (
	ledgerHost   = "ledger.shop.svc.cluster.local"
	ledgerPort   = 9090
	ledgerTarget = "ledger.shop.svc.cluster.local:9090"
	// ledgerCaller names the caller's WorkloadGroup and service account.
	ledgerCaller = "ledger-client"
)

const ledgerRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger, namespace: shop}
spec:
  host: ledger.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: us-west, to: us-east}]}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}
`

// ledgerExport is the ServiceEntry of one ledger instance (%s address,
// %d port): its SPIFFE ID is the ledger service account's.
const ledgerExport = `apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: ledger, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger.shop.svc.cluster.local]
  ports: [{number: 9090, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints:
  - {address: %s, ports: {grpc: %s}, serviceAccount: ledger}
`

// proxylessGRPC: the caller's RPCs go to east, then to central when east's
// ledger dies, then back to east when it returns.
func (v *verifier) proxylessGRPC(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "proxyless gRPC: east's ledger stops", Expected: "west's proxyless caller is served by east (per its DestinationRule), " +
		"by central within 3 s after east's ledger is killed, and by east again once it returns; " +
		"none fails that began after the ledger was gone (those in flight while it dies may)"}
	caller, err := v.st.startLedger(ctx)
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	results := filepath.Join(caller.Dir, "results.jsonl")
	start := time.Now()
	if _, ok := settledGRPC(ctx, results, time.Time{}, 20, 60*time.Second, "east"); !ok {
		r.Happened = "never served by east: " + describe(countGRPC(readGRPC(results, start)))
		return r
	}
	east, err := v.st.findProxyless("east", "ledger")
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	killedAt := time.Now()
	gone := v.kill(killed{pid: east.AppPID, cluster: east.Cluster, addr: east.App})
	moved, ok := settledGRPC(ctx, results, killedAt, 20, 15*time.Second, "central")
	if !ok {
		r.Happened = "not moved to central: " + describe(countGRPC(readGRPC(results, killedAt)))
		return r
	}
	took := moved.Sub(killedAt)
	restarted := time.Now()
	if err := v.st.startLedgerApp(east); err != nil {
		r.Happened = err.Error()
		return r
	}
	_ = v.st.save()
	back, backOK := settledGRPC(ctx, results, restarted, 20, 60*time.Second, "east")
	during := readGRPC(results, killedAt)
	by := countGRPC(during)
	r.Requests, r.Failed = len(during), by[""]
	delete(by, "")
	r.Took = took
	r.Happened = fmt.Sprintf("moved to central after %s", took.Round(time.Millisecond))
	if backOK {
		r.Happened += fmt.Sprintf(", back on east %s after its restart", back.Sub(restarted).Round(time.Millisecond))
	} else {
		r.Happened += ", not back on east within 60 s"
	}
	r.Happened += fmt.Sprintf("; ledger gone after %s; %s", gone.Sub(killedAt).Round(time.Millisecond), describe(by))
	as := grpcAnswers(during)
	r.Happened += whyFailed(as, killedAt)
	r.OK = took <= 3*time.Second && backOK && failedAfter(as, gone) == 0
	return r
}

// startLedger starts ledger in east and central and the caller in west,
// unless they run, and returns the caller.
func (st *State) startLedger(ctx context.Context) (*WorkloadState, error) {
	if c, err := st.findProxyless("west", ledgerCaller); err == nil && alive(c.AppPID) {
		return c, nil
	}
	if st.cluster("east") == nil || st.cluster("west") == nil || st.cluster("central") == nil {
		return nil, fmt.Errorf("lab: the proxyless step needs east, west and central")
	}
	for _, cluster := range []string{"east", "central"} {
		w := st.newProxyless("ledger", cluster)
		w.App = st.freeAddr(w.Address)
		if err := st.startSVIDAgent(ctx, w, "ledger"); err != nil {
			return nil, err
		}
		if err := st.startLedgerApp(w); err != nil {
			return nil, err
		}
		host, port, _ := net.SplitHostPort(w.App)
		if err := os.WriteFile(filepath.Join(st.cluster(cluster).ConfigDir, "ledger.yaml"), fmt.Appendf(nil, ledgerExport, host, port), 0o644); err != nil {
			return nil, err
		}
	}
	west := st.cluster("west")
	if err := os.WriteFile(filepath.Join(west.ConfigDir, "ledger-rule.yaml"), []byte(ledgerRule), 0o644); err != nil {
		return nil, err
	}
	c := st.newProxyless(ledgerCaller, "west")
	if err := st.startSVIDAgent(ctx, c, ledgerCaller); err != nil {
		return nil, err
	}
	// The recipe: the bootstrap from 'federate xds bootstrap', then the
	// caller with GRPC_XDS_BOOTSTRAP and SNI on.
	bootstrap := filepath.Join(c.Dir, "bootstrap.json")
	out, err := exec.CommandContext(ctx, st.Binary, "xds", "bootstrap", "--control-plane", west.Addr,
		"--namespace", "shop", "--name", ledgerCaller, "--ip", c.Address, "--svid-dir", filepath.Join(c.Dir, "svid"),
		"--refresh-interval", "10s", "-o", bootstrap).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("lab: xds bootstrap: %v\n%s", err, out)
	}
	env, err := exec.LookPath("env")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	c.AppPID, err = st.startIn("west", env, filepath.Join(c.Dir, "caller.log"),
		"GRPC_XDS_BOOTSTRAP="+bootstrap, "GRPC_EXPERIMENTAL_XDS_SNI=true",
		st.Binary, "lab", "grpc-caller", "--target", ledgerTarget, "--out", filepath.Join(c.Dir, "results.jsonl"))
	if err != nil {
		return nil, err
	}
	return c, st.save()
}

// newProxyless records one more proxyless process pair (an app and its
// SVID agent) of cluster, before anything of it starts, so that 'lab
// down' stops whatever of it did.
func (st *State) newProxyless(name, cluster string) *WorkloadState {
	st.Proxyless = append(st.Proxyless, WorkloadState{Name: name, Service: name, Cluster: cluster, Outbound: map[string]string{},
		Address: st.ip(firstWorkloadIP + len(st.Workloads) + len(st.Proxyless) + 8),
		Dir:     filepath.Join(st.Dir, "proxyless", cluster, name)})
	return &st.Proxyless[len(st.Proxyless)-1]
}

// startSVIDAgent onboards w as WorkloadGroup shop/w.Name with service
// account sa and runs 'federate-agent svid' for it, until its files are
// there.
func (st *State) startSVIDAgent(ctx context.Context, w *WorkloadState, sa string) error {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return err
	}
	group := fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: %s, namespace: shop}\nspec:\n  template: {serviceAccount: %s}\n", w.Name, sa)
	groupFile := filepath.Join(w.Dir, "workloadgroup.yaml")
	if err := os.WriteFile(groupFile, []byte(group), 0o644); err != nil {
		return err
	}
	config := filepath.Join(w.Dir, "config")
	out, err := exec.CommandContext(ctx, st.Binary, "vm", "configure", "-f", groupFile, "--cluster", w.Cluster, "-o", config,
		"--hub", st.Hub.Addr, "--credential", st.Credential, "--internal-ip", w.Address).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: vm configure %s in %s: %v\n%s", w.Name, w.Cluster, err, out)
	}
	args := []string{"svid", "--config-dir", config, "--state-dir", filepath.Join(w.Dir, "state"), "--svid-dir", filepath.Join(w.Dir, "svid")}
	args = append(args, st.logArgs()...)
	log := filepath.Join(w.Dir, "agent.log")
	if w.AgentPID, err = st.startIn(w.Cluster, st.AgentBinary, log, args...); err != nil {
		return err
	}
	if err := st.save(); err != nil {
		return err
	}
	return waitFile(ctx, filepath.Join(w.Dir, "svid", agent.BundleFile), w.Name+"'s federate-agent svid in "+w.Cluster, Process{PID: w.AgentPID, Log: log})
}

// startLedgerApp starts a ledger instance on its recorded address.
func (st *State) startLedgerApp(w *WorkloadState) error {
	pid, err := st.startIn(w.Cluster, st.Binary, filepath.Join(w.Dir, "app.log"), "lab", "grpc-app",
		"--listen", w.App, "--svid-dir", filepath.Join(w.Dir, "svid"))
	w.AppPID = pid
	return err
}

// hostOf is the host of addr: proxyless callers dial a control plane at
// its address, which its certificate carries ('controlplane
// --serving-name').
func hostOf(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

func (st *State) findProxyless(cluster, name string) (*WorkloadState, error) {
	for i := range st.Proxyless {
		if w := &st.Proxyless[i]; w.Cluster == cluster && w.Name == name {
			return w, nil
		}
	}
	return nil, fmt.Errorf("lab: no proxyless %s in %s", name, cluster)
}

// readGRPC reads the caller's results that started at or after from.
func readGRPC(path string, from time.Time) []proxyless.Result {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []proxyless.Result
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var r proxyless.Result
		if json.Unmarshal(sc.Bytes(), &r) == nil && !r.Start.Before(from) {
			out = append(out, r)
		}
	}
	return out
}

// grpcCluster is the cluster whose SVID answered (its trust domain is
// <cluster>.shop), or "" for a failed RPC.
func grpcCluster(r proxyless.Result) string {
	if r.Err != "" {
		return ""
	}
	td, _, _ := strings.Cut(strings.TrimPrefix(r.Server, "spiffe://"), "/")
	return strings.TrimSuffix(td, "."+Mesh)
}

// grpcAnswers are the caller's results as the load steps' answers.
func grpcAnswers(rs []proxyless.Result) []answer {
	out := make([]answer, len(rs))
	for i, r := range rs {
		out[i] = answer{began: r.Start, at: r.End, cluster: grpcCluster(r)}
		if r.Err != "" {
			out[i].err = errors.New(r.Err)
		}
	}
	return out
}

func countGRPC(rs []proxyless.Result) map[string]int {
	by := map[string]int{}
	for _, r := range rs {
		by[grpcCluster(r)]++
	}
	return by
}

// settledGRPC waits until the last n results after from were all served
// by cluster, and returns when the first result served by it ended.
func settledGRPC(ctx context.Context, path string, from time.Time, n int, timeout time.Duration, cluster string) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rs := readGRPC(path, from)
		run := 0
		for i := len(rs) - 1; i >= 0 && grpcCluster(rs[i]) == cluster; i-- {
			run++
		}
		if run >= n {
			for _, r := range rs {
				if grpcCluster(r) == cluster {
					return r.End, true
				}
			}
		}
		time.Sleep(100 * time.Millisecond) // polling another process's output
	}
	return time.Time{}, false
}
