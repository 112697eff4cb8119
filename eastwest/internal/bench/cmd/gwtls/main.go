// Command gwtls measures what TLS connections and TLS bulk cost through
// running proxies, side by side: with -backend it serves a crypto/tls
// backend (TLS 1.3, ECDSA P-256, no session tickets); with -targets it
// drives each target in turn for several rounds and prints, per target,
// the median of the rounds:
//
//   - connections: 4 workers open connections for -for, each a full
//     handshake and a 1-byte exchange; the rate, then CPU per connection
//     of the whole machine (/proc/stat) and of the proxy (its
//     /proc/<pid>/stat, and in brackets the part spent in the kernel),
//     and the proxy's context switches per connection;
//   - bulk (-bulk-mib): 4 connections each read that many MiB from the
//     backend; MB/s, then CPU per MB of the machine and of the proxy, and
//     the proxy's context switches per MB.
//
// The machine's CPU is what bounds the rate on a machine that client,
// backend and proxy share: it shows what a proxy costs the others too.
// See docs/benchmarks-gateway.md.
//
//	gwtls -backend 127.0.0.1:9443 &
//	gwtls -targets direct=127.0.0.1:9443=0,gateway=127.0.0.1:15443=1234 -rounds 5
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

const (
	serverName = "svc-a.cluster-b.test"
	workers    = 4
	cmdPing    = 'p'
	cmdBulk    = 'b'
)

func main() {
	backend := flag.String("backend", "", "serve the TLS backend on this address until killed")
	targets := flag.String("targets", "", "name=addr=pid,... (pid 0: no proxy, as for the backend itself)")
	rounds := flag.Int("rounds", 5, "rounds; each visits every target in turn")
	connsFor := flag.Duration("for", 3*time.Second, "how long each round opens connections (0: skip)")
	bulkMiB := flag.Int("bulk-mib", 0, "MiB each of 4 connections reads per round (0: skip)")
	flag.Parse()
	if err := run(*backend, *targets, *rounds, *connsFor, *bulkMiB); err != nil {
		fmt.Fprintln(os.Stderr, "gwtls:", err)
		os.Exit(1)
	}
}

func run(backend, targets string, rounds int, connsFor time.Duration, bulkMiB int) error {
	if backend != "" {
		return serveBackend(backend, bulkMiB)
	}
	ts, err := parseTargets(targets)
	if err != nil {
		return err
	}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: serverName, MinVersion: tls.VersionTLS13}
	conns := map[string][][5]float64{}
	bulk := map[string][][5]float64{}
	fmt.Printf("median of %d rounds; connections: %d workers for %s each round; bulk: %d × %d MiB\n", rounds, workers, connsFor, workers, bulkMiB)
	for range rounds {
		for _, t := range ts {
			if connsFor > 0 {
				r, err := t.measure(func() (float64, error) { return openConns(t.addr, cfg, connsFor) })
				if err != nil {
					return fmt.Errorf("%s: connections: %w", t.name, err)
				}
				conns[t.name] = append(conns[t.name], r)
			}
			if bulkMiB > 0 {
				r, err := t.measure(func() (float64, error) { return readBulk(t.addr, cfg, bulkMiB) })
				if err != nil {
					return fmt.Errorf("%s: bulk: %w", t.name, err)
				}
				bulk[t.name] = append(bulk[t.name], r)
			}
			time.Sleep(300 * time.Millisecond) // let the last connections close
		}
	}
	if connsFor > 0 {
		fmt.Println("\n| path | new TLS conn/s | machine CPU µs/conn | proxy CPU µs/conn (system) | proxy context switches/conn |")
		fmt.Println("| --- | --- | --- | --- | --- |")
		for _, t := range ts {
			rs := conns[t.name]
			fmt.Printf("| %s | %.0f | %.0f | %s | %s |\n", t.name, median(rs, 0), 1e6*median(rs, 1),
				t.proxyCPU(rs, 1e6, "%.0f"), t.proxy(rs, 3, 1, "%.2f"))
		}
	}
	if bulkMiB > 0 {
		fmt.Println("\n| path | TLS bulk MB/s | machine CPU ms/MB | proxy CPU ms/MB (system) | proxy context switches/MB |")
		fmt.Println("| --- | --- | --- | --- | --- |")
		for _, t := range ts {
			rs := bulk[t.name]
			fmt.Printf("| %s | %.0f | %.3f | %s | %s |\n", t.name, median(rs, 0), 1e3*median(rs, 1),
				t.proxyCPU(rs, 1e3, "%.3f"), t.proxy(rs, 3, 1, "%.2f"))
		}
	}
	return nil
}

// proxy formats the median of column i scaled, or a dash for no proxy.
func (t target) proxy(rs [][5]float64, i int, scale float64, format string) string {
	if t.pid == 0 {
		return "—"
	}
	return fmt.Sprintf(format, scale*median(rs, i))
}

// proxyCPU formats the proxy's CPU and, in brackets, its system part.
func (t target) proxyCPU(rs [][5]float64, scale float64, format string) string {
	if t.pid == 0 {
		return "—"
	}
	return t.proxy(rs, 2, scale, format) + " (" + t.proxy(rs, 4, scale, format) + ")"
}

type target struct {
	name, addr string
	pid        int
}

func parseTargets(s string) ([]target, error) {
	var ts []target
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Split(part, "=")
		if len(f) != 3 {
			return nil, fmt.Errorf("target %q: want name=addr=pid", part)
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", part, err)
		}
		ts = append(ts, target{f[0], f[1], pid})
	}
	if len(ts) == 0 {
		return nil, errors.New("no targets: give -targets or -backend")
	}
	return ts, nil
}

// measure runs work, which returns how many units (connections, MB) it
// did, and returns units per second and, per unit, the machine's CPU
// seconds, the proxy's, the proxy's context switches and the proxy's
// system CPU seconds.
func (t target) measure(work func() (float64, error)) ([5]float64, error) {
	m0, s0 := machineCPU(), switches(t.pid)
	p0, k0 := procCPU(t.pid)
	start := time.Now()
	units, err := work()
	if err != nil {
		return [5]float64{}, err
	}
	took := time.Since(start).Seconds()
	m1, s1 := machineCPU(), switches(t.pid)
	p1, k1 := procCPU(t.pid)
	return [5]float64{units / took, (m1 - m0) / units, (p1 - p0) / units, (s1 - s0) / units, (k1 - k0) / units}, nil
}

// openConns opens connections from 4 workers for d and returns how many.
func openConns(addr string, cfg *tls.Config, d time.Duration) (float64, error) {
	var done atomic.Int64
	errs := make(chan error, workers)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				c, err := dial(addr, cfg)
				if err != nil {
					errs <- err
					return
				}
				_, err = c.Write([]byte{cmdPing})
				if err == nil {
					_, err = io.ReadFull(c, make([]byte, 1))
				}
				c.Close()
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	return float64(done.Load()), errors.Join(slices.Collect(chanValues(errs))...)
}

// readBulk reads mib MiB over each of 4 connections and returns the MB.
func readBulk(addr string, cfg *tls.Config, mib int) (float64, error) {
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			c, err := dial(addr, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if _, err := c.Write([]byte{cmdBulk}); err != nil {
				errs <- err
				return
			}
			if n, err := io.CopyBuffer(io.Discard, io.LimitReader(c, int64(mib)<<20), make([]byte, 256<<10)); err != nil || n != int64(mib)<<20 {
				errs <- fmt.Errorf("read %d of %d bytes: %v", n, int64(mib)<<20, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return float64(workers*mib<<20) / 1e6, errors.Join(slices.Collect(chanValues(errs))...)
}

func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, c.SetDeadline(time.Now().Add(time.Minute))
}

func chanValues(ch <-chan error) func(func(error) bool) {
	return func(yield func(error) bool) {
		for e := range ch {
			if !yield(e) {
				return
			}
		}
	}
}

// serveBackend answers cmdPing with one byte and cmdBulk with mib MiB
// (in 256 KiB writes), then closes.
func serveBackend(addr string, mib int) error {
	cert, err := tlstest.SelfSigned(serverName)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
	chunk := make([]byte, 256<<10)
	for {
		c, err := lis.Accept()
		if err != nil {
			return err
		}
		go func() {
			t := tls.Server(c, cfg)
			defer t.Close()
			t.SetDeadline(time.Now().Add(time.Minute))
			var cmd [1]byte
			if _, err := io.ReadFull(t, cmd[:]); err != nil {
				return
			}
			switch cmd[0] {
			case cmdPing:
				t.Write(cmd[:])
			case cmdBulk:
				for range max(mib, 1) * 4 {
					if _, err := t.Write(chunk); err != nil {
						return
					}
				}
				io.Copy(io.Discard, t) // until the client closes
			}
		}()
	}
}

func median(rs [][5]float64, i int) float64 {
	xs := make([]float64, len(rs))
	for j, r := range rs {
		xs[j] = r[i]
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// machineCPU is the busy CPU seconds of the whole machine (/proc/stat:
// all but idle and iowait).
func machineCPU() float64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	var busy float64
	for i, f := range strings.Fields(line)[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseFloat(f, 64)
		busy += v
	}
	return busy / 100 // USER_HZ
}

// procCPU is utime+stime of pid (all its threads) and stime, in seconds;
// 0 for pid 0.
func procCPU(pid int) (total, system float64) {
	if pid == 0 {
		return 0, 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, stime / 100
}

// switches is the context switches of pid's threads, both kinds.
func switches(pid int) float64 {
	if pid == 0 {
		return 0
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var n float64
	for _, t := range tasks {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		for line := range strings.SplitSeq(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "voluntary_ctxt_switches") {
				x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += x
			}
		}
	}
	return n
}
