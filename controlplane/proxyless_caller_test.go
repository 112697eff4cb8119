package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/internal/proxyless"
)

// callerEnv makes the test binary the docs' proxyless caller instead of
// running tests: grpc-go reads GRPC_XDS_BOOTSTRAP and
// GRPC_EXPERIMENTAL_XDS_SNI once, at start, so the caller is a process of
// its own with the environment the page prescribes.
const callerEnv = "FEDERATE_TEST_PROXYLESS_CALLER"

// runCallerProcess is the caller's main: it calls the targets in
// $FEDERATE_TEST_PROXYLESS_CALLER until its standard input closes, and
// writes every RPC to standard output.
func runCallerProcess() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	c := &proxyless.Caller{Targets: strings.Split(os.Getenv(callerEnv), ","), Interval: 2 * time.Millisecond, Timeout: time.Second, Out: os.Stdout}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// callerProcess is a running proxyless caller and what it reported.
type callerProcess struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr strings.Builder
	read   chan struct{} // closed once stdout is drained

	mu      sync.Mutex // guards results
	results []proxyless.Result
}

// startCaller runs the caller with the recipe's environment: the
// bootstrap file and SNI for the gateways.
func startCaller(t *testing.T, bootstrap string, targets ...string) *callerProcess {
	t.Helper()
	p := &callerProcess{read: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), callerEnv+"="+strings.Join(targets, ","),
		"GRPC_XDS_BOOTSTRAP="+bootstrap, "GRPC_EXPERIMENTAL_XDS_SNI=true")
	p.cmd.Stderr = &p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r proxyless.Result
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			p.mu.Lock()
			p.results = append(p.results, r)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop closes the caller's input and waits for it to exit.
func (p *callerProcess) stop(t *testing.T) {
	select {
	case <-p.read:
		return
	default:
	}
	p.stdin.Close()
	exited := make(chan error, 1)
	go func() { <-p.read; exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the caller exited with %v:\n%s", err, p.stderr.String())
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
		t.Error("the caller did not exit within 15s of its input closing")
	}
}

// since returns the results of RPCs to target (all targets if empty) that
// started at or after from.
func (p *callerProcess) since(from time.Time, target string) []proxyless.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []proxyless.Result
	for _, r := range p.results {
		if !r.Start.Before(from) && (target == "" || r.Target == target) {
			out = append(out, r)
		}
	}
	return out
}
