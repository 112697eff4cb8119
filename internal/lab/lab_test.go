package lab

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/membership"
)

// TestIntegrationLab builds the real binaries and brings two labs up at
// the same time, in two directories, as separate processes: each cluster
// sees every other, both pass every step of 'lab verify' at the same time,
// and down leaves no process or directory behind.
func TestIntegrationLab(t *testing.T) { testLab(t, 2, Options{}) }

// TestIntegrationLabIsolated runs one lab with every cluster in its own
// network namespace, where only gateways and the hub are reachable.
func TestIntegrationLabIsolated(t *testing.T) { testLab(t, 1, Options{Isolate: true}) }

// TestIntegrationLabHA runs one lab with the hub as 3 replica processes on
// a 3-member etcd (separate processes too). Its verify steps SIGKILL the
// replica every control plane streams from while the clusters export 30
// services (each control plane on another replica within 2 s, no change
// lost at any cluster or surviving replica), SIGKILL the etcd leader
// (every replica takes writes again within 5 s) and SIGSTOP a follower
// (no write fails); down stops the replicas and etcd too.
func TestIntegrationLabHA(t *testing.T) { testLab(t, 1, Options{HA: true, LogFormat: "json"}) }

// --ha and --isolate are refused together, before anything starts.
func TestUpHAIsolated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Up(ctx, Options{Dir: dir, Clusters: 3, HA: true, Isolate: true, Out: new(bytes.Buffer)})
	if err == nil || !strings.Contains(err.Error(), "--ha and --isolate") {
		t.Fatalf("up --ha --isolate: %v, want a refusal naming both", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused lab left %s: %v", dir, err)
	}
}

func testLab(t *testing.T, labs int, opts Options) {
	isolate := opts.Isolate
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "federate")
	build := exec.Command("go", "build", "-o", tmp+"/", "github.com/federate/federate/cmd/federate", "github.com/federate/federate/cmd/eastwest-gateway", "github.com/federate/federate/cmd/federate-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Every lab comes up at the same time.
	dirs := make([]string, labs)
	states := make([]*State, labs)
	outs := make([]bytes.Buffer, labs)
	errs := make([]error, labs)
	var wg sync.WaitGroup
	for i := range labs {
		dirs[i] = filepath.Join(tmp, fmt.Sprintf("lab%d", i+1))
		wg.Go(func() {
			o := opts
			o.Dir, o.Clusters, o.Binary, o.Out = dirs[i], 3, bin, &outs[i]
			states[i], errs[i] = Up(ctx, o)
		})
	}
	wg.Wait()
	for i := range labs {
		if st := states[i]; st != nil {
			t.Cleanup(func() { st.shutdown() })
		}
	}
	for i := range labs {
		if errs[i] != nil {
			t.Fatalf("lab up in %s: %v\n%s", dirs[i], errs[i], outs[i].String())
		}
	}
	saved := make([]*State, labs)
	for i := range labs {
		saved[i] = checkLab(ctx, t, dirs[i], outs[i].String())
	}
	if labs > 1 && saved[0].Loopback == saved[1].Loopback {
		t.Errorf("both labs use %s.0/24", saved[0].Loopback)
	}

	// The scenario of 'federate lab verify' passes every step, in every
	// lab at the same time.
	results := make([][]StepResult, labs)
	for i := range labs {
		wg.Go(func() {
			var progress bytes.Buffer
			start := time.Now()
			results[i], errs[i] = Verify(ctx, saved[i], &progress)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%w\n%s", errs[i], progress.String())
			}
			var table bytes.Buffer
			WriteTable(&table, results[i])
			t.Logf("lab verify in %s:\n%s\n%s", dirs[i], table.String(), Summary(results[i], time.Since(start)))
		})
	}
	wg.Wait()
	for i := range labs {
		if errs[i] != nil {
			t.Fatalf("verify in %s: %v", dirs[i], errs[i])
		}
		failed := false
		for _, r := range results[i] {
			if !r.OK {
				failed = true
				t.Errorf("%s: step %q failed: %s", dirs[i], r.Step, r.Happened)
			}
		}
		if failed {
			t.Logf("warnings in the logs of %s:\n%s", dirs[i], warnings(dirs[i]))
		}
	}

	dir := dirs[0]
	// A second 'up' in the same directory is refused while the lab runs.
	var out bytes.Buffer
	if _, err := Up(ctx, Options{Dir: dir, Clusters: 3, Binary: bin, Out: &out}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second lab up: err = %v, want 'already running'", err)
	}

	if opts.HA {
		checkHASteps(t, results[0])
	}
	if !isolate && !opts.HA {
		// A process whose address is taken exits, and the error says which
		// address and where its log is.
		log := filepath.Join(tmp, "taken.log")
		pid, err := start(bin, log, "lab", "app", "--listen", saved[0].Hub.Addr, "--service", "s", "--cluster", "c", "--instance", "i")
		if err != nil {
			t.Fatal(err)
		}
		for alive(pid) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := exitError("the app", log); !strings.Contains(err.Error(), saved[0].Hub.Addr+" is already in use") || !strings.Contains(err.Error(), log) {
			t.Errorf("exit error = %q, want the taken address %s and the log %s", err, saved[0].Hub.Addr, log)
		}
	}

	for i := range labs {
		checkDown(t, dirs[i], saved[i])
	}
}

// checkLab checks the lab that 'up' started in dir: lab.json, the
// processes, what every cluster sees and calls across clusters.
func checkLab(ctx context.Context, t *testing.T, dir, out string) *State {
	t.Helper()
	// lab.json records every process, and all of them run.
	saved, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	last := "[6/6] starting the coffee shop"
	if len(saved.Hubs) > 0 {
		last = "[7/7] starting the coffee shop"
		checkHAState(t, saved)
	}
	if !strings.Contains(out, last) {
		t.Errorf("progress output missing the last step:\n%s", out)
	}
	if len(saved.Clusters) != 3 || saved.Hub.Addr == "" {
		t.Fatalf("lab.json: %+v", saved)
	}
	for _, pid := range saved.processes() {
		if !alive(pid) {
			t.Errorf("process %d is not running", pid)
		}
	}
	// Every control plane sees the coffee shop: 3 clusters, 4 services.
	for _, c := range saved.Clusters {
		resp, err := saved.Status(ctx, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		services := 0
		for _, cs := range resp.GetClusters() {
			services += int(cs.GetServices())
			if cs.GetState() != "alive" {
				t.Errorf("%s sees %s %s", c.Name, cs.GetName(), cs.GetState())
			}
		}
		for _, cs := range resp.GetClusters() {
			for _, want := range saved.Clusters {
				if want.Name == cs.GetName() && cs.GetGateway() != want.Gateway.Addr {
					t.Errorf("%s sees %s's gateway at %q, want %q", c.Name, cs.GetName(), cs.GetGateway(), want.Gateway.Addr)
				}
			}
		}
		if len(resp.GetClusters()) != 3 || services != 6 {
			t.Errorf("%s sees %d clusters and %d services, want 3 and 6", c.Name, len(resp.GetClusters()), services)
		}
	}
	// Calls cross clusters through sidecars and gateways: order in east
	// reaches inventory and the barista VM in central, and payment in west
	// reaches the barista.
	order, err := saved.find("east", "order-1")
	if err != nil {
		t.Fatal(err)
	}
	payment, err := saved.find("west", "payment-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []struct {
		from    WorkloadState
		service string
		cluster string
	}{{order, "inventory", "central"}, {order, "barista", "central"}, {payment, "barista", "central"}} {
		r, err := saved.Call(ctx, call.from, call.service)
		if err != nil || r.Cluster != call.cluster {
			t.Errorf("%s calling %s: %+v, %v; want an answer from %s", call.from.Name, call.service, r, err, call.cluster)
		}
	}
	return saved
}

// checkDown stops the lab in dir and checks that nothing of it is left.
func checkDown(t *testing.T, dir string, saved *State) {
	t.Helper()
	var downOut bytes.Buffer
	if err := Down(dir, &downOut); err != nil {
		t.Fatal(err)
	}
	for _, pid := range saved.processes() {
		if alive(pid) {
			t.Errorf("process %d still runs after down", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab directory still exists after down: %v", err)
	}
	if saved.Isolate {
		for _, c := range saved.Clusters {
			if _, err := os.Stat("/var/run/netns/" + netnsName(c.Name)); !os.IsNotExist(err) {
				t.Errorf("network namespace %s still exists after down", netnsName(c.Name))
			}
		}
		if _, err := net.InterfaceByName(bridgeName); err == nil {
			t.Errorf("%s still exists after down", bridgeName)
		}
	}
	// Down again finds no lab, and says so without failing.
	downOut.Reset()
	if err := Down(dir, &downOut); err != nil || !strings.Contains(downOut.String(), "No lab in "+dir) {
		t.Errorf("second down: %v, %q; want success and 'No lab in %s'", err, downOut.String(), dir)
	}
}

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		self string
		args []string
		want string
	}{
		{"", []string{"lab", "down", "--dir", ".lab"}, "federate lab down --dir .lab"},
		{"bin/federate", []string{"lab", "up", "--dir", "/tmp/lab A"}, "bin/federate lab up --dir '/tmp/lab A'"},
		{"/opt/it's/federate", []string{"status"}, `'/opt/it'\''s/federate' status`},
	} {
		if got := Command(c.self, c.args...); got != c.want {
			t.Errorf("Command(%q, %q) = %q, want %q", c.self, c.args, got, c.want)
		}
	}
}

// checkHAState checks what lab.json says of an HA lab: 3 hub replicas and
// 3 etcd members, each with its address and a running process, the
// members' client URLs on https, and the hub field naming every replica.
func checkHAState(t *testing.T, st *State) {
	t.Helper()
	if len(st.Hubs) != 3 || len(st.Etcd) != 3 {
		t.Fatalf("lab.json lists %d hubs and %d etcd members, want 3 and 3", len(st.Hubs), len(st.Etcd))
	}
	var addrs []string
	for _, h := range st.Hubs {
		if h.Address == "" || !alive(h.PID) {
			t.Errorf("hub replica %+v: no address or not running", h)
		}
		addrs = append(addrs, h.Address)
	}
	if st.Hub.Addr != strings.Join(addrs, ",") {
		t.Errorf("hub.addr = %q, want every replica: %q", st.Hub.Addr, strings.Join(addrs, ","))
	}
	for _, m := range st.Etcd {
		if !strings.HasPrefix(m.Address, "https://") || !alive(m.PID) {
			t.Errorf("etcd member %+v: no https client URL or not running", m)
		}
	}
	// Every control plane holds every replica's address, and --log-format
	// reached the processes.
	for _, c := range st.Clusters {
		ms, err := membership.LoadMembership(c.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		if got := membership.HubAddrs(ms.Hub); !sameSet(got, addrs) {
			t.Errorf("%s's membership names hubs %q, want every replica %q", c.Name, got, addrs)
		}
		if len(ms.GossipSeeds) < 3 {
			t.Errorf("%s's gossip seeds %q, want every replica's", c.Name, ms.GossipSeeds)
		}
		data, err := os.ReadFile(c.Log)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("{")) {
			t.Errorf("%s logs %q..., want JSON lines (--log-format json)", c.Name, firstLine(data))
		}
	}
}

func sameSet(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(s string) bool { return !slices.Contains(b, s) })
}

func firstLine(data []byte) string {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	return string(line)
}

// checkHASteps checks that verify played the HA steps, not the single
// hub's, and that the replica's death moved every control plane.
func checkHASteps(t *testing.T, results []StepResult) {
	t.Helper()
	want := []string{"a hub replica is killed under a stream of changes", "the etcd leader is killed", "an etcd member is frozen"}
	var got []string
	for _, r := range results {
		got = append(got, r.Step)
		if r.Step == "the hub is down; west exports menu" {
			t.Errorf("an HA lab played the single hub's step %q", r.Step)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("verify played %q, missing %q", got, w)
		}
	}
}

// warnings returns the last warnings and errors of every log in a lab's
// directory, to say why a step failed.
func warnings(dir string) string {
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		var lines []string
		for line := range strings.Lines(string(data)) {
			l := strings.ToLower(line)
			if strings.Contains(l, "level=warn") || strings.Contains(l, "level=error") ||
				strings.Contains(l, `"level":"warn`) || strings.Contains(l, `"level":"error`) {
				lines = append(lines, line)
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "== %s\n%s", path, strings.Join(lines[max(0, len(lines)-15):], ""))
		}
		return nil
	})
	return b.String()
}
