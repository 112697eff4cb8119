// Command gwcost measures what connections cost a running proxy (the
// gateway from gwbench, HAProxy, nginx) that routes a ClientHello to a
// plain TCP echo backend (gwbench -echo): the proxy's own CPU time per
// connection, read from /proc/<pid>/stat around sequential connections
// that each send a hello and read it back; the round trip of 64-byte
// echoes on one connection (p50, p99, p99.9) and the proxy's CPU per
// round trip; and its RSS per idle connection. No TLS runs in the loop,
// so the numbers are the proxy's and the kernel's, steadier than the
// TLS benchmark's on a shared machine. See docs/benchmarks-gateway.md.
//
//	gwcost -addr 127.0.0.1:15443 -pid 1234 -conns 5000 -echoes 10000 -idle 1000
package main

import (
	"bytes"
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
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:15443", "the proxy to measure")
	pid := flag.Int("pid", 0, "the proxy's process id, for its CPU time and RSS (0: wall time only)")
	name := flag.String("name", "svc-a.cluster-b.test", "the server name in the hello")
	conns := flag.Int("conns", 2000, "sequential hello round trips, one connection each (0: skip)")
	echoes := flag.Int("echoes", 5000, "64-byte round trips on one connection (0: skip)")
	rate := flag.Int("rate", 1000, "echo round trips per second")
	idle := flag.Int("idle", 0, "idle connections to hold, for RSS per connection (0: skip)")
	settle := flag.Duration("settle", 7*time.Second, "how long idle connections wait before RSS is read")
	freeAddr := flag.Bool("free-addr", false, "print a free loopback address and exit (for scripts)")
	flag.Parse()
	if *freeAddr {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		fmt.Println(l.Addr())
		l.Close()
		return
	}
	hello, err := clientHello(*name)
	if err != nil {
		fail(err)
	}
	if *conns > 0 {
		if err := measureConns(*addr, *pid, hello, *conns); err != nil {
			fail(err)
		}
	}
	if *echoes > 0 {
		if err := measureEchoes(*addr, *pid, hello, *echoes, *rate); err != nil {
			fail(err)
		}
	}
	if *idle > 0 {
		if err := measureIdle(*addr, *pid, hello, *idle, *settle); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gwcost:", err)
	os.Exit(1)
}

// clientHello returns the first flight of a TLS client for name.
func clientHello(name string) ([]byte, error) {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		_ = tls.Client(client, &tls.Config{ServerName: name}).Handshake()
		client.Close()
	}()
	head := make([]byte, 5)
	if _, err := io.ReadFull(server, head); err != nil {
		return nil, err
	}
	body := make([]byte, int(head[3])<<8|int(head[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		return nil, err
	}
	return append(head, body...), nil
}

// roundTrip opens a connection and sends hello, which the echo backend
// returns.
func roundTrip(addr string, hello []byte) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, err
	}
	echo := make([]byte, len(hello))
	if _, err := io.ReadFull(c, echo); err != nil {
		c.Close()
		return nil, err
	}
	if !bytes.Equal(echo, hello) {
		c.Close()
		return nil, errors.New("the echo differs from the hello")
	}
	return c.(*net.TCPConn), nil
}

func measureConns(addr string, pid int, hello []byte, n int) error {
	cpu0 := cpuSeconds(pid)
	start := time.Now()
	for i := range n {
		c, err := roundTrip(addr, hello)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		c.Close()
	}
	wall := time.Since(start)
	cpu := cpuSeconds(pid) - cpu0
	fmt.Printf("conns %d: proxy CPU %.1f µs per connection, wall %.1f µs per connection\n",
		n, cpu/float64(n)*1e6, wall.Seconds()/float64(n)*1e6)
	return nil
}

func measureEchoes(addr string, pid int, hello []byte, n, rate int) error {
	c, err := roundTrip(addr, hello)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Duration(n/rate+30) * time.Second))
	msg, reply := make([]byte, 64), make([]byte, 64)
	for range 50 { // warm-up
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return err
		}
	}
	rtts := make([]float64, 0, n)
	interval := time.Second / time.Duration(rate)
	cpu0 := cpuSeconds(pid)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sent := time.Now()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return err
		}
		rtts = append(rtts, float64(time.Since(sent).Nanoseconds())/1e3)
	}
	cpu := cpuSeconds(pid) - cpu0
	slices.Sort(rtts)
	q := func(p float64) float64 { return rtts[min(len(rtts)-1, int(float64(len(rtts))*p))] }
	fmt.Printf("echoes %d at %d/s: p50 %.1f µs, p99 %.1f µs, p99.9 %.1f µs; proxy CPU %.1f µs per round trip\n",
		n, rate, q(0.5), q(0.99), q(0.999), cpu/float64(n)*1e6)
	return nil
}

func measureIdle(addr string, pid int, hello []byte, n int, settle time.Duration) error {
	if pid == 0 {
		return errors.New("-idle needs -pid")
	}
	before := rssKiB(pid)
	var held []*net.TCPConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	start := time.Now()
	for i := range n {
		c, err := roundTrip(addr, hello)
		if err != nil {
			return fmt.Errorf("idle connection %d: %w", i+1, err)
		}
		_ = c.SetDeadline(time.Time{})
		held = append(held, c)
	}
	opened := time.Since(start)
	time.Sleep(settle)
	after := rssKiB(pid)
	fmt.Printf("idle %d (opened in %s, held %s): proxy RSS %+d KiB, %.2f KiB per connection\n",
		n, opened.Round(time.Millisecond), settle, after-before, float64(after-before)/float64(n))
	return nil
}

// cpuSeconds returns utime+stime of pid (all its threads), 0 for pid 0.
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		fail(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func rssKiB(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		fail(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kib
		}
	}
	return 0
}
