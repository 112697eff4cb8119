package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"google.golang.org/grpc"
)

// Defaults for the lab.
const (
	DefaultDir      = ".lab"
	DefaultClusters = 3
	Mesh            = "shop"
	StateFile       = "lab.json"
	readyTimeout    = 60 * time.Second
)

// Options configure 'lab up'.
type Options struct {
	Dir      string
	Clusters int
	// Binary is the federate executable to start (default: this one);
	// GatewayBinary the eastwest-gateway (default: beside Binary).
	Binary        string
	GatewayBinary string
	// AgentBinary is the federate-agent (default: beside Binary).
	AgentBinary string
	// Out receives progress lines.
	Out io.Writer
	// LogLevel and LogFormat are passed to every process (default info
	// and text).
	LogLevel  string
	LogFormat string
	// HA runs the hub as replicas on a 3-member etcd instead of one hub
	// on its bbolt file.
	HA bool
	// Isolate runs each cluster in its own network namespace (root only).
	Isolate bool
	// Command is how the user runs federate, for the commands that
	// messages suggest (default "federate").
	Command string
}

// State is what lab.json records: every process and address the lab started.
type State struct {
	Mesh       string `json:"mesh"`
	LogLevel   string `json:"logLevel,omitempty"`
	LogFormat  string `json:"logFormat,omitempty"`
	Dir        string `json:"dir"`
	Credential string `json:"credential"`
	// Hub is the hub; in an HA lab, its Addr lists every replica's
	// address (clients fail over between them) and the rest is the first
	// replica's.
	Hub Process `json:"hub"`
	// Hubs and Etcd are an HA lab's hub replicas and etcd members; CAFile
	// the mesh CA the replicas share.
	Hubs     []HubReplica   `json:"hubs,omitempty"`
	Etcd     []EtcdMember   `json:"etcd,omitempty"`
	CAFile   string         `json:"caFile,omitempty"`
	Clusters []ClusterState `json:"clusters"`
	// Workloads are the coffee shop's instances, each behind its sidecar.
	Workloads []WorkloadState `json:"workloads"`
	// Proxyless are the proxyless gRPC step's apps, each with its
	// 'federate-agent svid' (AgentPID); the caller's AppPID is the caller.
	Proxyless []WorkloadState `json:"proxyless,omitempty"`
	// Isolate: each cluster has its own network namespace.
	Isolate bool `json:"isolate,omitempty"`
	// Loopback is the lab's own /24 of 127.0.0.0/8, chosen at random so
	// that labs in other directories use other addresses, e.g.
	// "127.83.201": the hub, control planes and gateways listen on its .1
	// (without --isolate), the workloads on .10 and up.
	Loopback string `json:"loopback"`
	// The executables the lab runs, for restarting what verify stops.
	Binary        string `json:"binary"`
	GatewayBinary string `json:"gatewayBinary"`
	AgentBinary   string `json:"agentBinary"`

	// taken holds the addresses this run has handed out, so that none is
	// handed out twice before its process binds it.
	taken map[string]bool
}

// Process is one started process.
type Process struct {
	PID  int    `json:"pid"`
	Addr string `json:"addr"`
	// Bundles is the hub's SPIFFE bundle endpoint.
	Bundles string `json:"bundles,omitempty"`
	Gossip  string `json:"gossip"`
	DataDir string `json:"dataDir"`
	Log     string `json:"log"`
}

// ClusterState is one cluster's control plane.
type ClusterState struct {
	Process
	Name      string `json:"name"`
	Network   string `json:"network"`
	Locality  string `json:"locality"`
	ConfigDir string `json:"configDir"`
	// Metrics is the control plane's health and metrics address.
	Metrics string `json:"metrics,omitempty"`
	// Gateway is the cluster's east-west gateway process; its Addr is the
	// TLS passthrough port and Health its health and stats address.
	Gateway GatewayState `json:"gateway"`
}

// GatewayState is one east-west gateway process.
type GatewayState struct {
	PID    int    `json:"pid"`
	Addr   string `json:"addr"`
	Health string `json:"health"`
	Log    string `json:"log"`
}

// Up starts the lab and returns once every cluster sees every other.
func Up(ctx context.Context, opts Options) (_ *State, err error) {
	if opts.Clusters < 2 || opts.Clusters > MaxClusters {
		return nil, fmt.Errorf("lab: --clusters %d: a lab has 2 to %d clusters", opts.Clusters, MaxClusters)
	}
	if opts.HA && opts.Isolate {
		return nil, fmt.Errorf("lab: --ha and --isolate cannot be combined yet: run one of them")
	}
	if opts.Isolate && runtime.GOOS != "linux" {
		return nil, fmt.Errorf("lab: --isolate needs Linux network namespaces; on %s, run the lab without it", runtime.GOOS)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if old, err := Load(dir); err == nil && old.Running() {
		return nil, fmt.Errorf("lab: a lab is already running in %s; stop it with '%s'", dir, Command(opts.Command, "lab", "down", "--dir", opts.Dir))
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := progress{out: opts.Out, total: 6}
	if opts.HA {
		p.total++
	}
	defer func() {
		if err == nil {
			return
		}
		p.failed()
		if _, serr := os.Stat(filepath.Join(dir, StateFile)); serr != nil {
			_ = os.RemoveAll(dir) // nothing started: it holds nothing to look at
			return
		}
		err = fmt.Errorf("%w\nThe lab's logs are in %s; '%s' removes them", err, dir, Command(opts.Command, "lab", "down", "--dir", opts.Dir))
	}()
	bin, gwBin, agentBin, err := binaries(opts)
	if err != nil {
		return nil, err
	}
	st := &State{Mesh: Mesh, Dir: dir, LogLevel: opts.LogLevel, LogFormat: opts.LogFormat, Binary: bin, GatewayBinary: gwBin, AgentBinary: agentBin,
		Loopback: fmt.Sprintf("127.%d.%d", 1+rand.IntN(254), rand.IntN(256))}
	cs := clusters(opts.Clusters)
	// Whatever fails below, leave no process or namespace behind.
	ok := false
	defer func() {
		if !ok {
			st.shutdown()
		}
	}()
	hubHost := st.ip(1)
	if opts.Isolate {
		for _, c := range cs {
			st.Clusters = append(st.Clusters, ClusterState{Name: c.Name}) // for the teardown
		}
		if err := setupNetwork(dir, opts.Command, names(st.Clusters)); err != nil {
			return nil, err
		}
		st.Isolate = true
		hubHost = hubIP
	}

	conn, err := st.startHubs(ctx, &p, hubHost, opts.HA)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	st.Clusters = nil
	p.step(fmt.Sprintf("joining %d clusters with one-time tokens", len(cs)))
	if err := st.joinClusters(ctx, conn, cs); err != nil {
		return nil, err
	}
	p.done(strings.Join(names(st.Clusters), ", "))

	p.step("starting the control planes")
	if err := st.startControlPlanes(bin); err != nil {
		return nil, err
	}
	p.done(fmt.Sprintf("%d processes", len(st.Clusters)))

	p.step("starting the east-west gateways")
	if err := st.startGateways(ctx); err != nil {
		return nil, err
	}
	p.done("ready")

	p.step("waiting until every cluster sees every other")
	if err := st.waitConverged(ctx); err != nil {
		return nil, err
	}
	p.done("converged")

	st.planWorkloads()
	p.step(fmt.Sprintf("starting the coffee shop: %d apps, each onboarded with its sidecar", len(st.Workloads)))
	if err := st.startCoffeeShop(ctx); err != nil {
		return nil, err
	}
	p.done("every cluster sees every instance healthy")
	ok = true
	return st, nil
}

// timerArgs are the lab's staleness timers: short, so that failures show.
var timerArgs = []string{"--gossip-profile", "lan", "--stale-after", "5s", "--dead-after", "15s", "--expire-after", "1h"}

// commonArgs are the hub's and control planes' flags; metrics is the
// health and metrics address, "" for any free port.
func (st *State) commonArgs(metrics string) []string {
	if metrics == "" {
		metrics = "127.0.0.1:0" // many processes share the host
	}
	args := append([]string{"--metrics-listen", metrics}, timerArgs...)
	return append(args, st.logArgs()...)
}

// logArgs pass the lab's log level and format on to a process.
func (st *State) logArgs() []string {
	var args []string
	if st.LogLevel != "" {
		args = append(args, "--log-level", st.LogLevel)
	}
	if st.LogFormat != "" {
		args = append(args, "--log-format", st.LogFormat)
	}
	return args
}

// StartHub starts the hub process on its recorded address and data directory
// (again, after StopHub).
func (st *State) StartHub(bin string) error {
	args := append([]string{"hub", "--listen", st.Hub.Addr, "--gossip", st.Hub.Gossip, "--bundle-listen", st.Hub.Bundles,
		"--data-dir", st.Hub.DataDir, "--mesh", st.Mesh}, st.commonArgs("")...)
	pid, err := start(bin, st.Hub.Log, args...)
	if err != nil {
		return err
	}
	st.Hub.PID = pid
	return st.save()
}

// startGateway starts cluster c's gateway on its recorded addresses.
func (st *State) startGateway(c *ClusterState) error {
	args := []string{"--control-plane", c.Addr, "--credential", filepath.Join(c.DataDir, "gateway.pem"),
		"--listen", c.Gateway.Addr, "--health", c.Gateway.Health, "--node-id", c.Name + "-gateway"}
	args = append(args, st.logArgs()...)
	pid, err := st.startIn(c.Name, st.GatewayBinary, c.Gateway.Log, args...)
	if err != nil {
		return err
	}
	c.Gateway.PID = pid
	return st.save()
}

// KillHub stops the hub with SIGKILL, as a crash would.
func (st *State) KillHub() error {
	if err := syscall.Kill(st.Hub.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("lab: kill hub %d: %w", st.Hub.PID, err)
	}
	for alive(st.Hub.PID) {
		time.Sleep(10 * time.Millisecond) // polling another process's exit
	}
	return nil
}

// Load reads the lab state from dir.
func Load(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	st := new(State)
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", filepath.Join(dir, StateFile), err)
	}
	return st, nil
}

// Down stops every process of the lab in dir and removes the directory.
func Down(dir string, out io.Writer) error {
	st, err := Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "No lab in %s (no %s): nothing to stop.\n", dir, StateFile)
		return nil
	}
	if err != nil {
		return err
	}
	n := st.shutdown()
	fmt.Fprintf(out, "Stopped %d lab processes.\n", n)
	if st.Isolate {
		fmt.Fprintf(out, "Removed the network namespaces and %s.\n", bridgeName)
	}
	if err := os.RemoveAll(st.Dir); err != nil {
		return err
	}
	fmt.Fprintf(out, "Removed %s.\n", st.Dir)
	return nil
}

func (st *State) save() error {
	data, _ := json.MarshalIndent(st, "", "  ")
	return os.WriteFile(filepath.Join(st.Dir, StateFile), data, 0o644)
}

// Status asks one cluster's control plane for its view.
func (st *State) Status(ctx context.Context, cluster string) (*hubpb.StatusResponse, error) {
	ca := filepath.Join(st.Hub.DataDir, membership.CAFile)
	dial := func() (*grpc.ClientConn, error) { return membership.Dial(st.Hub.Addr, st.Credential, ca) }
	if c := st.cluster(cluster); c != nil {
		dial = func() (*grpc.ClientConn, error) { return membership.Dial(c.Addr, st.Credential, ca) }
		if st.Isolate {
			// Its own address is private to its namespace: ask through its gateway.
			dial = func() (*grpc.ClientConn, error) {
				return membership.DialControlPlane(c.Gateway.Addr, c.Name, st.Credential, ca)
			}
		}
	}
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
}

// waitConverged waits until every control plane holds every cluster's
// slice at the version its owner reports, and sees it alive.
func (st *State) waitConverged(ctx context.Context) error {
	exited := func() error {
		for _, c := range st.Clusters {
			if !alive(c.PID) {
				return exitError(c.Name+"'s control plane", c.Log)
			}
		}
		return nil
	}
	if err := poll(ctx, 200*time.Millisecond, st.convergence, exited); err != nil {
		return fmt.Errorf("%w; logs are in %s", err, st.Dir)
	}
	return nil
}

// convergence returns "" when converged, or what is still missing.
func (st *State) convergence(ctx context.Context) string {
	views := make(map[string]*hubpb.StatusResponse)
	own := make(map[string]*registry.Version)
	for _, c := range st.Clusters {
		v, err := st.Status(ctx, c.Name)
		if err != nil {
			return fmt.Sprintf("%s does not answer yet", c.Name)
		}
		views[c.Name] = v
		for _, cs := range v.GetClusters() {
			if cs.GetName() == c.Name {
				own[c.Name] = cs.GetSliceVersion()
			}
		}
		if own[c.Name].GetCounter() == 0 {
			return fmt.Sprintf("%s has not published its services yet", c.Name)
		}
	}
	for viewer, v := range views {
		seen := make(map[string]bool)
		for _, cs := range v.GetClusters() {
			if registry.Compare(cs.GetSliceVersion(), own[cs.GetName()]) == 0 && cs.GetState() == gossip.StateAlive {
				seen[cs.GetName()] = true
			}
		}
		for _, c := range st.Clusters {
			if !seen[c.Name] {
				return fmt.Sprintf("%s does not see %s's current slice alive yet", viewer, c.Name)
			}
		}
	}
	return ""
}

func names(cs []ClusterState) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// ip returns the address n of the lab's own loopback /24.
func (st *State) ip(n int) string { return fmt.Sprintf("%s.%d", st.Loopback, n) }

// freeAddr returns an address on host whose port is free for TCP and UDP
// now and that this lab has not handed out yet. Ports come from below the
// kernel's ephemeral range (32768 and up by default), so the many outgoing
// connections of the lab's processes never take one before the process it
// was chosen for starts.
func (st *State) freeAddr(host string) string {
	if st.taken == nil {
		st.taken = make(map[string]bool)
	}
	for range 1000 {
		addr := net.JoinHostPort(host, strconv.Itoa(20000+rand.IntN(12000)))
		if st.taken[addr] || !free(addr) {
			continue
		}
		st.taken[addr] = true
		return addr
	}
	return net.JoinHostPort(host, "0")
}

// free reports whether addr can be bound for TCP and UDP now.
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	p, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	p.Close()
	return true
}

// addrInUse finds the address in Go's error for a listener whose address
// is taken, as the lab's processes log it.
var addrInUse = regexp.MustCompile(`listen (?:tcp|udp)[46]? (\S+): bind: address already in use`)

// Command returns a command line that runs as printed: federate as the
// user invoked it (default "federate"), then args, quoted for a shell where
// needed.
func Command(federate string, args ...string) string {
	if federate == "" {
		federate = "federate"
	}
	words := []string{shellQuote(federate)}
	for _, a := range args {
		words = append(words, shellQuote(a))
	}
	return strings.Join(words, " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// progress prints numbered steps with their durations.
type progress struct {
	out   io.Writer
	total int
	n     int
	start time.Time
	open  bool // a step is printed without its end
}

func (p *progress) step(what string) {
	p.n++
	p.start = time.Now()
	p.open = true
	fmt.Fprintf(p.out, "[%d/%d] %s... ", p.n, p.total, what)
}

func (p *progress) done(detail string) {
	p.open = false
	fmt.Fprintf(p.out, "done (%s, %s)\n", detail, time.Since(p.start).Round(time.Millisecond))
}

// failed ends the step in progress, if any, before the error is printed.
func (p *progress) failed() {
	if p.open {
		p.open = false
		fmt.Fprintf(p.out, "failed after %s\n", time.Since(p.start).Round(time.Millisecond))
	}
}
