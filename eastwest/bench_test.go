package eastwest_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// BenchmarkGatewayVsPeers compares, in one run on loopback, a TLS backend
// reached directly, through our gateway (a child process), through HAProxy
// (req.ssl_sni) and through nginx (stream ssl_preread): first each proxy
// on one thread (gateway GOMAXPROCS=1, HAProxy nbthread 1, nginx one
// process), then on two (GOMAXPROCS=2, nbthread 2, nginx two workers). See
// docs/benchmarks-gateway.md.
//
//	go test -run='^$' -bench=GatewayVsPeers -benchtime=1x -timeout=15m ./eastwest/
//
// HAProxy and nginx come from: apt-get install -y haproxy nginx libnginx-mod-stream
func BenchmarkGatewayVsPeers(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("the proxies' CPU time is read from /proc: Linux only")
	}
	haproxy, errH := exec.LookPath("haproxy")
	nginx, errN := exec.LookPath("nginx")
	if errH != nil || errN != nil {
		b.Skip("haproxy and nginx are needed: apt-get install -y haproxy nginx libnginx-mod-stream")
	}
	if _, err := os.Stat(streamModule); err != nil {
		b.Skip("nginx's stream module is needed: apt-get install -y libnginx-mod-stream")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		b.Skip("the go tool is needed to build the gateway child process")
	}
	bins := peerBinaries{gateway: buildGateway(b, goTool), haproxy: haproxy, nginx: nginx}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) { benchVsPeers(b, bins, threads) })
	}
}

const streamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

type peerBinaries struct{ gateway, haproxy, nginx string }

// benchVsPeers measures the four paths with each proxy on threads threads.
func benchVsPeers(b *testing.B, bins peerBinaries, threads int) {
	fmt.Printf("\n%d thread(s) per proxy; load average at the start: %s\n", threads, loadAverage())
	dir := b.TempDir()
	cert, pool := tlstest.Certificate(b, benchName)
	backend := startBackend(b, cert)

	gwAddr, hpAddr, ngAddr := freeAddr(b), freeAddr(b), freeAddr(b)
	hpCfg := filepath.Join(dir, "haproxy.cfg")
	writeFile(b, hpCfg, fmt.Sprintf(haproxyConfig, threads, hpAddr, benchName, backend))
	ngCfg := filepath.Join(dir, "nginx.conf")
	// One thread: a single process, as the reference runs it; two: a
	// master and two workers, nginx's way to use two cores.
	master := "off"
	if threads > 1 {
		master = "on"
	}
	writeFile(b, ngCfg, fmt.Sprintf(nginxConfig, streamModule, master, threads, dir, dir, benchName, backend, ngAddr))

	gw := startProcess(b, "gateway", gwAddr, []string{fmt.Sprintf("GOMAXPROCS=%d", threads)}, bins.gateway,
		"-listen", gwAddr, "-name", benchName, "-upstream", backend, "-lifetime", "10m")
	hp := startProcess(b, "haproxy", hpAddr, nil, bins.haproxy, "-db", "-f", hpCfg)
	ng := startProcess(b, "nginx", ngAddr, nil, bins.nginx, "-p", dir, "-c", ngCfg, "-e", filepath.Join(dir, "nginx-error.log"))

	paths := []*path{
		{name: "direct", addr: backend},
		{name: "gateway", addr: gwAddr, pid: gw},
		{name: "haproxy", addr: hpAddr, pid: hp},
		{name: "nginx", addr: ngAddr, pid: ng},
	}
	client := &tls.Config{
		ServerName: benchName,
		RootCAs:    pool,
		MinVersion: tls.VersionTLS13,
	}
	for _, p := range paths {
		if err := probe(p.addr, client); err != nil {
			b.Fatalf("%s: a TLS round trip through %s failed: %v", p.name, p.addr, err)
		}
	}

	for _, p := range paths {
		p.measureIdle(b, client)
	}
	b.ResetTimer()
	for range b.N {
		for round := range benchRounds {
			order := slices.Clone(paths)
			rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, p := range order {
				p.measure(b, client)
			}
			b.Logf("round %d done (order %s)", round+1, names(order))
		}
	}
	b.StopTimer()

	for _, p := range paths {
		p.summarize()
	}
	report(b, paths, threads)
}

const (
	benchName    = "svc-a.cluster-b.test"
	benchRounds  = 3
	bulkConns    = 4
	bulkTotal    = 1 << 30 // bytes read per bulk sample, over bulkConns connections
	connDuration = 2 * time.Second
	connWorkers  = 4
	idleBench    = 1000 // idle connections held per proxy
	latRate      = 1000 // round trips per second
	latDuration  = 2 * time.Second
	latSize      = 64
	ioDeadline   = 60 * time.Second
)

const haproxyConfig = `global
  nbthread %d
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend ew
  bind %s
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend svc_a if { req.ssl_sni -i %s }
backend svc_a
  server s1 %s
`

const nginxConfig = `load_module %s;
daemon off;
master_process %s;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/nginx-error.log warn;
events { worker_connections 9000; }
stream {
  map $ssl_preread_server_name $up { %s %s; default 127.0.0.1:9; }
  server { listen %s; ssl_preread on; proxy_pass $up; }
}
`

// path is one way from the client to the backend and what was measured
// through it.
type path struct {
	name string
	addr string
	pid  int // the proxy's process, 0 for direct

	mbps, cpuPerGB, connRate, p50, p99 []float64

	// per idle connection, measured once
	idleKiB, idleFDs float64

	// medians, filled by summarize
	MBps, CPUPerGB, ConnRate, P50, P99 float64
}

func (p *path) measure(b *testing.B, cfg *tls.Config) {
	cpu0 := procCPU(b, p.pid)
	start := time.Now()
	n, err := bulk(p.addr, cfg)
	elapsed := time.Since(start)
	cpu1 := procCPU(b, p.pid)
	if err != nil {
		b.Fatalf("%s: bulk: %v", p.name, err)
	}
	p.mbps = append(p.mbps, float64(n)/1e6/elapsed.Seconds())
	if p.pid != 0 {
		p.cpuPerGB = append(p.cpuPerGB, (cpu1-cpu0)/(float64(n)/1e9))
	}

	rate, err := connRate(p.addr, cfg)
	if err != nil {
		b.Fatalf("%s: connection rate: %v", p.name, err)
	}
	p.connRate = append(p.connRate, rate)

	p50, p99, err := latency(p.addr, cfg)
	if err != nil {
		b.Fatalf("%s: latency: %v", p.name, err)
	}
	p.p50 = append(p.p50, p50)
	p.p99 = append(p.p99, p99)
}

// measureIdle opens idleBench TLS connections through the proxy, leaves
// them idle and reads what they cost the proxy process from /proc.
func (p *path) measureIdle(b *testing.B, cfg *tls.Config) {
	if p.pid == 0 {
		return
	}
	before := sampleProc(b, p.pid)
	var conns []*tls.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idleBench {
		c, err := dial(p.addr, cfg)
		if err != nil {
			b.Fatalf("%s: idle connection %d: %v", p.name, len(conns)+1, err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte{cmdEcho}); err != nil {
			b.Fatalf("%s: idle connection %d: %v", p.name, len(conns), err)
		}
	}
	time.Sleep(idleSettle)
	held := sampleProc(b, p.pid)
	p.idleKiB = float64(held.rssKiB-before.rssKiB) / idleBench
	p.idleFDs = float64(held.fds-before.fds) / idleBench
}

func (p *path) summarize() {
	p.MBps, p.CPUPerGB, p.ConnRate = median(p.mbps), median(p.cpuPerGB), median(p.connRate)
	p.P50, p.P99 = median(p.p50), median(p.p99)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(xs []float64, format string) string {
	if len(xs) == 0 {
		return "—"
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", median(xs), slices.Min(xs), slices.Max(xs))
}

func names(ps []*path) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.name)
	}
	return strings.Join(s, ",")
}

// report prints the table and reports the gateway's ratios as metrics.
func report(b *testing.B, paths []*path, threads int) {
	direct, gw, hp, ng := paths[0], paths[1], paths[2], paths[3]
	for _, p := range paths {
		b.ReportMetric(p.MBps, p.name+"_MB/s")
		b.ReportMetric(p.ConnRate, p.name+"_conn/s")
		b.ReportMetric(p.P99, p.name+"_p99_µs")
		if p.pid != 0 {
			b.ReportMetric(p.CPUPerGB, p.name+"_cpu_s/GB")
		}
	}
	added := func(p *path, q float64) float64 {
		if q == 50 {
			return p.P50 - direct.P50
		}
		return p.P99 - direct.P99
	}
	ratios := []struct {
		name   string
		value  float64
		target string
		met    bool
	}{
		{"gw/haproxy_throughput", gw.MBps / hp.MBps, ">= 1.1", gw.MBps >= 1.1*hp.MBps},
		{"gw/direct_throughput", gw.MBps / direct.MBps, ">= 0.75", gw.MBps >= 0.75*direct.MBps},
		{"gw/haproxy_cpu_per_GB", gw.CPUPerGB / hp.CPUPerGB, "<= 0.6", gw.CPUPerGB <= 0.6*hp.CPUPerGB},
		{"gw/haproxy_conn_rate", gw.ConnRate / hp.ConnRate, ">= 1.1", gw.ConnRate >= 1.1*hp.ConnRate},
		{"gw/haproxy_added_p99", added(gw, 99) / added(hp, 99), "<= 1.0", added(gw, 99) <= added(hp, 99)},
		{"gw_KiB_per_idle_conn", gw.idleKiB, "<= 4", gw.idleKiB <= 4},
		{"gw_fds_per_idle_conn", gw.idleFDs, "<= 4", gw.idleFDs <= 4},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d thread(s) per proxy; load average at the end: %s", threads, loadAverage())
	fmt.Fprintf(&sb, "\nmedian (min–max) of %d rounds; bulk %d MiB over %d connections; conn rate %d workers × %s; latency %d B at %d/s × %s on one keep-alive connection\n\n",
		benchRounds, bulkTotal>>20, bulkConns, connWorkers, connDuration, latSize, latRate, latDuration)
	sb.WriteString("| path | TLS bulk MB/s | proxy CPU s/GB | new TLS conn/s | RTT p50 µs | RTT p99 µs | added p50 µs | added p99 µs |\n")
	sb.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, p := range []*path{direct, gw, hp, ng} {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %.1f | %.1f |\n", p.name,
			spread(p.mbps, "%.0f"), spread(p.cpuPerGB, "%.2f"), spread(p.connRate, "%.0f"),
			spread(p.p50, "%.1f"), spread(p.p99, "%.1f"), added(p, 50), added(p, 99))
	}
	fmt.Fprintf(&sb, "\n%d idle TLS connections held by each proxy for %s (differences in its RSS and open files):\n\n", idleBench, idleSettle)
	sb.WriteString("| proxy | KiB per idle connection | fds per idle connection |\n| --- | --- | --- |\n")
	for _, p := range []*path{gw, hp, ng} {
		fmt.Fprintf(&sb, "| %s | %.1f | %.2f |\n", p.name, p.idleKiB, p.idleFDs)
	}
	sb.WriteString("\n| ratio | value | target | met |\n| --- | --- | --- | --- |\n")
	for _, r := range ratios {
		b.ReportMetric(r.value, r.name)
		met := "no"
		if r.met {
			met = "yes"
		}
		fmt.Fprintf(&sb, "| %s | %.2f | %s | %s |\n", r.name, r.value, r.target, met)
	}
	fmt.Fprintf(&sb, "\ngw/nginx throughput %.2f, cpu per GB %.2f, conn rate %.2f\n",
		gw.MBps/ng.MBps, gw.CPUPerGB/ng.CPUPerGB, gw.ConnRate/ng.ConnRate)
	// Printed, not logged: the testing package cuts long benchmark logs.
	fmt.Print(sb.String())
}

// --- the backend ---

// The client's first byte after the handshake says what it wants.
const (
	cmdBulk = 'B' // followed by a uint64 byte count: the backend sends that many bytes
	cmdEcho = 'E' // then latSize-byte messages, echoed until the client closes
	cmdPing = 'P' // the backend answers one byte and closes
)

// startBackend serves TLS on a loopback port until the benchmark ends.
func startBackend(b *testing.B, cert tls.Certificate) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates:           []tls.Certificate{cert},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				serveBackend(tls.Server(c, cfg))
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	b.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

var bulkChunk = make([]byte, 256<<10)

func serveBackend(c *tls.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioDeadline))
	var cmd [9]byte
	if _, err := io.ReadFull(c, cmd[:1]); err != nil {
		return
	}
	switch cmd[0] {
	case cmdBulk:
		if _, err := io.ReadFull(c, cmd[1:]); err != nil {
			return
		}
		left := binary.BigEndian.Uint64(cmd[1:])
		for left > 0 {
			n := min(left, uint64(len(bulkChunk)))
			if _, err := c.Write(bulkChunk[:n]); err != nil {
				return
			}
			left -= n
		}
		_, _ = io.Copy(io.Discard, c) // until the client closes
	case cmdEcho:
		buf := make([]byte, latSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case cmdPing:
		_, _ = c.Write([]byte{'p'})
	}
}

// --- the client side ---

func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(ioDeadline))
	return c, nil
}

func probe(addr string, cfg *tls.Config) error {
	c, err := dial(addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte{cmdPing}); err != nil {
		return err
	}
	var p [1]byte
	_, err = io.ReadFull(c, p[:])
	return err
}

// bulk reads bulkTotal bytes over bulkConns parallel TLS connections.
func bulk(addr string, cfg *tls.Config) (int64, error) {
	var total atomic.Int64
	errs := make(chan error, bulkConns)
	var wg sync.WaitGroup
	for range bulkConns {
		wg.Go(func() {
			c, err := dial(addr, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			var cmd [9]byte
			cmd[0] = cmdBulk
			want := int64(bulkTotal / bulkConns)
			binary.BigEndian.PutUint64(cmd[1:], uint64(want))
			if _, err := c.Write(cmd[:]); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 256<<10)
			var got int64
			for got < want {
				n, err := c.Read(buf)
				got += int64(n)
				if err != nil {
					errs <- fmt.Errorf("after %d of %d bytes: %w", got, want, err)
					break
				}
			}
			total.Add(got)
		})
	}
	wg.Wait()
	close(errs)
	return total.Load(), errors.Join(slices.Collect(chanSeq(errs))...)
}

func chanSeq(ch <-chan error) func(func(error) bool) {
	return func(yield func(error) bool) {
		for e := range ch {
			if !yield(e) {
				return
			}
		}
	}
}

// connRate opens connections with a full handshake (no resumption) from
// connWorkers workers for connDuration, each doing one 1-byte exchange.
func connRate(addr string, cfg *tls.Config) (float64, error) {
	cfg = cfg.Clone()
	cfg.ClientSessionCache = nil
	deadline := time.Now().Add(connDuration)
	var done atomic.Int64
	var firstErr atomic.Pointer[error]
	start := time.Now()
	var wg sync.WaitGroup
	for range connWorkers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := probe(addr, cfg); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, *e
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// latency sends latSize-byte echoes at latRate per second for latDuration
// on one keep-alive connection and returns the p50 and p99 round trip in
// µs. Sends are paced by a schedule, but each round trip is timed from its
// actual send, so the sleep's wake-up delay is not counted; at 1000/s and
// sub-millisecond round trips the schedule is never behind.
func latency(addr string, cfg *tls.Config) (p50, p99 float64, err error) {
	c, err := dial(addr, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{cmdEcho}); err != nil {
		return 0, 0, err
	}
	msg := make([]byte, latSize)
	reply := make([]byte, latSize)
	// A few unmeasured round trips warm the path up.
	for range 50 {
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return 0, 0, err
		}
	}
	n := int(latDuration.Seconds() * latRate)
	interval := time.Second / latRate
	rtts := make([]float64, 0, n)
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		sent := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return 0, 0, err
		}
		rtts = append(rtts, float64(time.Since(sent).Nanoseconds())/1e3)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)*50/100], rtts[len(rtts)*99/100], nil
}

// --- processes ---

func freeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeFile(b *testing.B, name, content string) {
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
}

// startProcess starts a proxy, waits until addr accepts connections and
// stops the proxy when the benchmark ends. It returns the proxy's pid.
func startProcess(b testing.TB, name, addr string, env []string, bin string, args ...string) int {
	return startChild(b, name, addr, env, bin, args...).pid
}

// child is a process started by startChild.
type child struct {
	pid int
	mu  *sync.Mutex
	out *strings.Builder // its standard output and error, the first 4 MiB
}

// output returns what the child has printed so far.
func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startChild is startProcess, returning the child's output too.
func startChild(b testing.TB, name, addr string, env []string, bin string, args ...string) *child {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe() // the gateway stops when this closes
	if err != nil {
		b.Fatal(err)
	}
	var out strings.Builder
	var outMu sync.Mutex
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s := bufio.NewScanner(pr)
		for s.Scan() {
			outMu.Lock()
			if out.Len() < 4<<20 {
				out.WriteString(s.Text() + "\n")
			}
			outMu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(exited)
	}()
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		<-copied
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			outMu.Lock()
			defer outMu.Unlock()
			b.Fatalf("%s exited before listening on %s:\n%s", name, addr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not listen on %s after 10s", name, addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &child{pid: cmd.Process.Pid, mu: &outMu, out: &out}
}

// procCPU returns the user+system CPU seconds of pid and its child
// processes (nginx's workers); 0 for pid 0.
func procCPU(b *testing.B, pid int) float64 {
	if pid == 0 {
		return 0
	}
	total := 0.0
	for _, p := range procTree(b, pid) {
		total += ownCPU(b, p)
	}
	return total
}

// procTree returns pid and its descendants.
func procTree(tb testing.TB, pid int) []int {
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", tree[i], tree[i]))
		if err != nil {
			if i == 0 {
				tb.Fatalf("list the children of %d: %v", pid, err)
			}
			continue // a child that exited meanwhile
		}
		for _, f := range strings.Fields(string(raw)) {
			if c, err := strconv.Atoi(f); err == nil {
				tree = append(tree, c)
			}
		}
	}
	return tree
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:min(3, len(f))], " ")
}

func ownCPU(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("read the CPU time of %d: %v", pid, err)
	}
	// Fields after the ")" that ends the command name: state is field 3,
	// utime 14 and stime 15.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", pid, s)
	}
	return (utime + stime) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// buildGateway builds the gateway child process, without the race
// detector whatever the test binary has.
func buildGateway(tb testing.TB, goTool string) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "gwbench")
	build := exec.Command(goTool, "build", "-o", bin, "./internal/bench/cmd/gwbench")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build the gateway: %v\n%s", err, out)
	}
	return bin
}
