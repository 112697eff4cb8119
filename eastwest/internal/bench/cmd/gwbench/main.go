// Command gwbench runs the east-west gateway with a static, one-name router,
// or with -echo a TCP echo backend.
// BenchmarkGatewayVsPeers (eastwest/bench_test.go) starts it as a child
// process so that its CPU time can be read from /proc/<pid>/stat the same
// way as HAProxy's and nginx's. It stops on SIGINT/SIGTERM, when its
// standard input closes, or after -lifetime, whichever comes first.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/federate/federate/eastwest"
)

// opts are the flags that tests use.
var opts struct {
	maxOpenFiles int
	statsEvery   time.Duration
	verbose      bool

	returnMemoryEvery time.Duration
}

type staticRouter struct {
	name  string
	route eastwest.Route
}

func (r staticRouter) Route(serverName string) (eastwest.Route, error) {
	if serverName == r.name {
		return r.route, nil
	}
	return eastwest.Route{}, fmt.Errorf("%q: %w", serverName, eastwest.ErrNoRoute)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:15443", "loopback address to listen on")
	name := flag.String("name", "svc-a.cluster-b.test", "the one server name routed")
	upstream := flag.String("upstream", "127.0.0.1:9443", "where that name goes")
	lifetime := flag.Duration("lifetime", 10*time.Minute, "stop after this long in any case")
	watchStdin := flag.Bool("stdin", true, "stop when standard input closes")
	echo := flag.Bool("echo", false, "serve a plain TCP echo backend on -listen instead of the gateway")
	flag.IntVar(&opts.maxOpenFiles, "max-open-files", 0, "lower the soft limit on open files to this (0 keeps it)")
	flag.DurationVar(&opts.statsEvery, "stats-every", 0, "print the gateway's Stats as a JSON line on standard output this often, when they change (0: never)")
	flag.DurationVar(&opts.returnMemoryEvery, "return-memory-every", 0, "Config.ReturnMemoryEvery (0: the default)")
	flag.BoolVar(&opts.verbose, "v", false, "log at level info, not warn")
	flag.Parse()
	if err := run(*listen, *name, *upstream, *lifetime, *watchStdin, *echo); err != nil {
		fmt.Fprintln(os.Stderr, "gwbench:", err)
		os.Exit(1)
	}
}

func run(listen, name, upstream string, lifetime time.Duration, watchStdin, echo bool) error {
	addr, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return err
	}
	if !addr.IP.IsLoopback() {
		return fmt.Errorf("-listen %s: only loopback addresses are allowed", listen)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, lifetime)
	defer cancel()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	if echo {
		return serveEcho(ctx, addr)
	}
	if opts.maxOpenFiles > 0 {
		if err := limitOpenFiles(opts.maxOpenFiles); err != nil {
			return fmt.Errorf("-max-open-files %d: %w", opts.maxOpenFiles, err)
		}
	}
	level := slog.LevelWarn
	if opts.verbose {
		level = slog.LevelInfo
	}
	gw, err := eastwest.New(eastwest.Config{
		Router:            staticRouter{name: name, route: eastwest.Route{Endpoints: []string{upstream}}},
		Listen:            listen,
		DrainTimeout:      time.Second,
		ReturnMemoryEvery: opts.returnMemoryEvery,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return err
	}
	lis, err := eastwest.Listen(ctx, addr.String())
	if err != nil {
		return err
	}
	fmt.Println("ready", lis.Addr())
	if opts.statsEvery > 0 {
		go printStats(ctx, gw, opts.statsEvery)
	}
	go printMemoryOnSignal(ctx)
	return gw.Serve(ctx, lis)
}

// printStats prints gw's Stats as one JSON line whenever they change: a
// test reads them from the outside without opening a connection, which a
// gateway out of file descriptors could not accept.
func printStats(ctx context.Context, gw *eastwest.Gateway, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last []byte
	for {
		line, err := json.Marshal(gw.Stats())
		if err != nil {
			fmt.Fprintln(os.Stderr, "gwbench: stats:", err)
			return
		}
		if !bytes.Equal(line, last) {
			fmt.Printf("stats %s\n", line)
			last = line
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// serveEcho echoes every connection's bytes back until ctx ends: a backend
// that holds many idle connections outside the test's process.
func serveEcho(ctx context.Context, addr *net.TCPAddr) error {
	lis, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return err
	}
	var conns sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { lis.Close() })
	defer stop()
	fmt.Println("ready", lis.Addr())
	for {
		c, err := lis.AcceptTCP()
		if err != nil {
			break
		}
		end := context.AfterFunc(ctx, func() { c.Close() })
		conns.Go(func() {
			defer end()
			defer c.Close()
			// Plain reads and writes: splice would hold a pipe per connection.
			_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 512))
		})
	}
	conns.Wait()
	return nil
}

// printMemoryOnSignal prints the runtime's memory classes and goroutine
// count to standard error on each SIGUSR1: where a process's RSS goes.
func printMemoryOnSignal(ctx context.Context) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-usr1:
		}
		var samples []metrics.Sample
		for _, d := range metrics.All() {
			if strings.HasPrefix(d.Name, "/memory/classes/") || d.Name == "/sched/goroutines:goroutines" {
				samples = append(samples, metrics.Sample{Name: d.Name})
			}
		}
		metrics.Read(samples)
		for _, s := range samples {
			if s.Value.Kind() == metrics.KindUint64 {
				fmt.Fprintf(os.Stderr, "%s %d\n", s.Name, s.Value.Uint64())
			}
		}
	}
}
