package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
)

// With --isolate each cluster runs in its own network namespace, joined to
// a shared network by a veth pair on one bridge. The hub listens on the
// bridge and each gateway on its namespace's shared address; everything
// else (control planes, apps, sidecars) listens on its namespace's own
// loopback, which no other cluster can reach. So cross-cluster traffic can
// only flow through the gateways.
const (
	bridgeName = "fedlab0"
	sharedNet  = "10.77.0."
	hubIP      = sharedNet + "1"
	// GatewayPort is where the gateways listen with --isolate, each on its
	// own address.
	GatewayPort = "15443"
)

func netnsName(cluster string) string { return "fedlab-" + cluster }

// sharedIP is cluster i's address on the shared network.
func sharedIP(i int) string { return fmt.Sprintf("%s%d", sharedNet, 10+i) }

// setupNetwork creates the bridge and a namespace per cluster for the lab
// in dir; command is how the user runs federate. It undoes what it did if
// a step fails.
func setupNetwork(dir, command string, names []string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("lab: --isolate creates network namespaces and needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("lab: --isolate needs the ip command (iproute2)")
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		// The bridge's alias names the lab that made it.
		other, _ := os.ReadFile("/sys/class/net/" + bridgeName + "/ifalias")
		if other := strings.TrimSpace(string(other)); other != "" {
			return fmt.Errorf("lab: %s exists: the isolated lab in %s runs; stop it first with '%s'", bridgeName, other, Command(command, "lab", "down", "--dir", other))
		}
		return fmt.Errorf("lab: %s exists: another isolated lab runs; stop it first with '%s' in its directory, or remove the bridge with 'ip link del %s'",
			bridgeName, Command(command, "lab", "down", "--dir", "DIR"), bridgeName)
	}
	defer func() {
		if err != nil {
			teardownNetwork(names)
		}
	}()
	cmds := [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", hubIP + "/24", "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	}
	if len(dir) < 256 { // the kernel's limit for an alias
		cmds = append(cmds, []string{"link", "set", bridgeName, "alias", dir})
	}
	for i, name := range names {
		ns, host, peer := netnsName(name), fmt.Sprintf("fl%dh", i), fmt.Sprintf("fl%dn", i)
		cmds = append(cmds,
			[]string{"netns", "add", ns},
			[]string{"link", "add", host, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", host, "master", bridgeName, "up"},
			[]string{"link", "set", peer, "netns", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "link", "set", peer, "name", "eth0"},
			[]string{"-n", ns, "addr", "add", sharedIP(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// teardownNetwork removes the namespaces (and their veths) and the bridge.
func teardownNetwork(names []string) {
	for _, name := range names {
		_ = exec.Command("ip", "netns", "del", netnsName(name)).Run()
	}
	_ = exec.Command("ip", "link", "del", bridgeName).Run()
}

// startIn starts a process in cluster's namespace, or here without one.
func (st *State) startIn(cluster, bin, logPath string, args ...string) (int, error) {
	if !st.Isolate || cluster == "" {
		return start(bin, logPath, args...)
	}
	// ip netns exec enters the namespace and execs bin: the PID is bin's.
	return start("ip", logPath, append([]string{"netns", "exec", netnsName(cluster), bin}, args...)...)
}

// dialer connects from inside cluster's namespace, or from here without one.
func (st *State) dialer(cluster string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if !st.Isolate || cluster == "" {
		var d net.Dialer
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialInNetns(ctx, netnsName(cluster), network, addr)
	}
}

// httpClient makes requests from inside cluster's namespace, a new
// connection each time.
func (st *State) httpClient(cluster string) *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: st.dialer(cluster)}}
}
