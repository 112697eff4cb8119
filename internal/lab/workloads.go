package lab

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// shopService is one of the coffee shop's services.
type shopService struct {
	Name string
	Port uint32
}

var shopServices = []shopService{{"order", 8080}, {"payment", 8081}, {"inventory", 8082}, {"barista", 8083}}

func portOf(service string) uint32 {
	for _, s := range shopServices {
		if s.Name == service {
			return s.Port
		}
	}
	return 0
}

// placement lists the service of each workload in cluster c: order in
// east, payment in every cluster, inventory in central, and barista on a
// VM in central.
func placement(c cluster) []string {
	switch c.Name {
	case "east":
		return []string{"order", "payment", "payment"}
	case "west":
		return []string{"payment", "payment"}
	case "central":
		return []string{"inventory", "payment", "barista"}
	}
	return []string{"payment"}
}

// WorkloadState is one coffee-shop instance: an app on loopback behind a
// federate-agent sidecar, which onboarded it as a VM of its WorkloadGroup.
type WorkloadState struct {
	// Name is the WorkloadGroup, e.g. payment-2; its entry is <name>-<address>.
	Name    string `json:"name"`
	Service string `json:"service"`
	Cluster string `json:"cluster"`
	// Address is the instance's own IP, in the lab's loopback /24: its
	// sidecar's inbound listener (Inbound) and outbound listeners are there.
	Address string `json:"address"`
	Inbound string `json:"inbound"`
	// App is the application's address; the sidecar reaches it on 127.0.0.1.
	App      string `json:"app"`
	AppPID   int    `json:"appPid"`
	AgentPID int    `json:"agentPid"`
	Dir      string `json:"dir"`
	// Outbound maps each imported service to its sidecar listener.
	Outbound map[string]string `json:"outbound"`
}

// planWorkloads plans every cluster's instances: addresses, groups, imports.
func (st *State) planWorkloads() {
	for _, c := range st.Clusters {
		count := map[string]int{}
		for _, svc := range placement(cluster{Name: c.Name}) {
			count[svc]++
			st.Workloads = append(st.Workloads, st.newWorkload(fmt.Sprintf("%s-%d", svc, count[svc]), svc, c.Name))
		}
	}
}

// newWorkload plans one more instance: the next address of the lab's
// loopback /24 with free ports for its sidecar's listeners. Its app's
// address is chosen when it starts.
func (st *State) newWorkload(name, service, cluster string) WorkloadState {
	w := WorkloadState{Name: name, Service: service, Cluster: cluster, Outbound: map[string]string{},
		Address: st.ip(firstWorkloadIP + len(st.Workloads))}
	w.Dir = filepath.Join(st.Dir, "workloads", cluster, name)
	w.Inbound = st.freeAddr(w.Address)
	for _, s := range shopServices {
		if s.Name != service {
			w.Outbound[s.Name] = st.outboundAddr(w.Address, s.Port)
		}
	}
	return w
}

// outboundAddr is where a workload on host imports a service of port: the
// service's port, as an Istio Sidecar's egress listener binds it, when it
// is free; else any free port, which only the old sidecar.yaml format
// can say.
func (st *State) outboundAddr(host string, port uint32) string {
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if st.taken == nil {
		st.taken = make(map[string]bool)
	}
	if !st.taken[addr] && free(addr) {
		st.taken[addr] = true
		return addr
	}
	return st.freeAddr(host)
}

// sidecarYAML is w's sidecar.yaml: an Istio Sidecar, or the old format
// when an outbound listener is not on its service's port.
func sidecarYAML(w *WorkloadState) string {
	var b strings.Builder
	inHost, inPort, _ := net.SplitHostPort(w.Inbound)
	fmt.Fprintf(&b, "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: %s, namespace: shop}\nspec:\n", w.Name)
	fmt.Fprintf(&b, "  ingress:\n  - {port: {number: %s, protocol: TLS, name: mtls}, bind: %s, captureMode: NONE}\n", inPort, inHost)
	if len(w.Outbound) > 0 {
		b.WriteString("  egress:\n")
	}
	for _, s := range slices.Sorted(maps.Keys(w.Outbound)) {
		host, port, _ := net.SplitHostPort(w.Outbound[s])
		if port != strconv.Itoa(int(portOf(s))) {
			return oldSidecarYAML(w)
		}
		fmt.Fprintf(&b, "  - {port: {number: %s, protocol: HTTP, name: http-%s}, bind: %s, captureMode: NONE, hosts: [\"shop/%s.shop.svc.cluster.local\"]}\n",
			port, s, host, s)
	}
	return b.String()
}

func oldSidecarYAML(w *WorkloadState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "inbound:\n  listen: %s\noutbound:\n", w.Inbound)
	for _, s := range slices.Sorted(maps.Keys(w.Outbound)) {
		fmt.Fprintf(&b, "- {host: %s.shop.svc.cluster.local, port: %d, listen: %q}\n", s, portOf(s), w.Outbound[s])
	}
	return b.String()
}

// firstWorkloadIP is the first workload's address in the lab's /24, and
// firstControlPlaneIP the first cluster's control plane's: a lab has at
// most MaxClusters.
const (
	firstWorkloadIP     = 10
	firstControlPlaneIP = 200
	MaxClusters         = 50
)

// startWorkload onboards one instance with 'federate vm configure' and
// starts its app and its agent.
func (st *State) startWorkload(ctx context.Context, w *WorkloadState) error {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return err
	}
	// The app starts first, right after its port is chosen: the less time
	// between the two, the less chance that something else takes the port.
	w.App = st.freeAddr("127.0.0.1")
	if err := st.startApp(w); err != nil {
		return err
	}
	_, appPort, _ := net.SplitHostPort(w.App)
	group := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: %[1]s, namespace: shop}
spec:
  metadata:
    labels: {app: %[2]s, version: v1}
  template:
    serviceAccount: %[2]s
    ports: {http: %[3]s}
  probe:
    periodSeconds: 1
    failureThreshold: 1
    tcpSocket: {port: %[3]s}
`, w.Name, w.Service, appPort)
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
	if err := os.WriteFile(filepath.Join(config, "sidecar.yaml"), []byte(sidecarYAML(w)), 0o644); err != nil {
		return err
	}
	args := []string{"--config-dir", config, "--state-dir", filepath.Join(w.Dir, "state"), "--address", w.Address}
	args = append(args, st.logArgs()...)
	w.AgentPID, err = st.startIn(w.Cluster, st.AgentBinary, filepath.Join(w.Dir, "agent.log"), args...)
	return err
}

// startApp starts w's app on its recorded address.
func (st *State) startApp(w *WorkloadState) error {
	pid, err := st.startIn(w.Cluster, st.Binary, filepath.Join(w.Dir, "app.log"), "lab", "app",
		"--listen", w.App, "--service", w.Service, "--cluster", w.Cluster, "--instance", w.Name)
	w.AppPID = pid
	return err
}

// waitWorkloads waits until every cluster sees every instance healthy
// and every instance can call every other service.
func (st *State) waitWorkloads(ctx context.Context) error {
	want := map[string]int32{}
	for _, w := range st.Workloads {
		want[w.Cluster]++
	}
	return poll(ctx, 200*time.Millisecond, func(ctx context.Context) string {
		for _, c := range st.Clusters {
			resp, err := st.Status(ctx, c.Name)
			if err != nil {
				return c.Name + ": " + err.Error()
			}
			for _, cs := range resp.GetClusters() {
				if n := cs.GetEndpoints() - cs.GetUnhealthyEndpoints(); n != want[cs.GetName()] {
					return fmt.Sprintf("%s sees %d of %s's %d workloads healthy (agent logs in %s)",
						c.Name, n, cs.GetName(), want[cs.GetName()], filepath.Join(st.Dir, "workloads", cs.GetName()))
				}
			}
		}
		// Every sidecar has learned where every service is.
		for _, w := range st.Workloads {
			for _, svc := range slices.Sorted(maps.Keys(w.Outbound)) {
				if _, err := st.Call(ctx, w, svc); err != nil {
					return fmt.Sprintf("%s in %s cannot call %s yet: %v", w.Name, w.Cluster, svc, err)
				}
			}
		}
		return ""
	}, st.workloadExited)
}

// workloadExited says which workload's app or sidecar exited, and why.
func (st *State) workloadExited() error {
	for _, w := range st.Workloads {
		if !alive(w.AppPID) {
			return exitError(fmt.Sprintf("%s's app in %s", w.Name, w.Cluster), filepath.Join(w.Dir, "app.log"))
		}
		if !alive(w.AgentPID) {
			return exitError(fmt.Sprintf("%s's sidecar (federate-agent) in %s", w.Name, w.Cluster), filepath.Join(w.Dir, "agent.log"))
		}
	}
	return nil
}
