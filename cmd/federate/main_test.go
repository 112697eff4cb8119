package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/cmd/internal/clitest"
	"github.com/federate/federate/internal/fedtest"
)

func TestMain(m *testing.M) {
	clitest.Main("federate", run)
	// klog's logger is set once, before any test's client-go goroutine
	// reads it; each command then points it at its own logger.
	cli.BridgeKlog(slog.New(slog.DiscardHandler))
	fedtest.Main(m)
}

// lockedBuffer collects a command's output while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// background runs a federate command until the test ends.
func background(t *testing.T, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !strings.Contains(err.Error(), "context canceled") {
				t.Errorf("federate %s: %v\n%s", args[0], err, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("federate %s did not stop within 30s", args[0])
		}
	})
	return out
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("federate %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func TestHelpIsComplete(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"hub": {"--listen", "--data-dir", "--mesh", "--gossip", "--stale-after", "--dead-after", "--expire-after", "--credential-ttl",
			"--advertise", "--gossip-advertise", "--gossip-profile", "--bundle-listen", "--bundle-profile", "--bundle-cert", "--bundle-key", "--import-trust-domain", "--log-level",
			"--log-format", "--metrics-listen"},
		"token create": {"--hub", "--cluster", "--ttl", "--credential", "--ca", "--trust-domain", "-o"},
		"join": {"--token", "--data-dir", "--kubeconfig", "--context", "-n", "--in-cluster", "--kube-namespace", "--membership-secret",
			"--log-level", "--log-format"},
		"controlplane": {"--cluster", "--network", "--locality", "--data-dir", "--config-dir", "--listen", "--gossip", "--gateway", "--stale-after",
			"--advertise", "--gossip-profile", "--internal-host", "--trust-domain", "--cacerts", "--max-svid-ttl", "--bundle-refresh-hint",
			"--gateway-credential", "--vm-grace", "--vm-svid-ttl", "--kubeconfig", "--in-cluster", "--kube-namespace", "--membership-secret",
			"--gateway-service", "--gateway-secret", "--log-level", "--log-format", "--metrics-listen", "--serving-name", "--istio-write", "--context", "-n",
			"--leader-elect", "--leader-elect-resource-name", "--leader-elect-lease-duration", "--pod-name", "--import", "--import-service-imports", "--import-istio"},
		"status":          {"--hub", "--server", "-o", "--credential", "--ca"},
		"lab up":          {"--dir", "--clusters", "--isolate", "--log-level"},
		"lab verify":      {"--dir"},
		"lab status":      {"--dir", "-o"},
		"lab down":        {"--dir"},
		"lab app":         {"--listen", "--service", "--cluster", "--instance"},
		"lab grpc-app":    {"--listen", "--svid-dir"},
		"lab grpc-caller": {"--target", "--out", "--interval"},
		"trust rotate":    {"--cluster", "--hub", "--wait", "--credential", "-o"},
		"cluster remove":  {"--hub", "--credential", "-o"},
		"version":         {"-o"},
		"xds bootstrap":   {"--control-plane", "--namespace", "--name", "--ip", "--svid-dir", "--refresh-interval", "-o"},
		"vm configure":    {"-f", "--cluster", "-o", "--hub", "--control-plane", "--gateway", "--internal-ip", "--token-ttl", "--credential", "--ca"},
	}
	for cmd, flags := range cases {
		t.Run(cmd, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append(strings.Fields(cmd), "--help")
			if err := run(context.Background(), args, &out, &errOut); err != nil {
				t.Fatalf("run %v: %v", args, err)
			}
			if errOut.Len() > 0 {
				t.Errorf("help wrote to stderr: %s", errOut.String())
			}
			help := out.String()
			if !strings.Contains(help, "Usage:\n  federate "+cmd) {
				t.Errorf("help lacks the usage line:\n%s", help)
			}
			for _, f := range flags {
				if !documents(help, f) {
					t.Errorf("help does not document %s:\n%s", f, help)
				}
			}
		})
	}
}

// documents reports whether help lists flag f: "--name" as a long flag,
// "-x" as a shorthand.
func documents(help, f string) bool {
	if name, ok := strings.CutPrefix(f, "--"); ok {
		return strings.Contains(help, "  --"+name+" ") || strings.Contains(help, ", --"+name+" ")
	}
	return strings.Contains(help, "  "+f+", --")
}

func TestTopLevelUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, c := range rootCommand().Commands() {
		if !strings.Contains(out.String(), "  "+c.Name()+" ") {
			t.Errorf("usage does not list %q", c.Name())
		}
	}
	if err := run(context.Background(), []string{"bogus"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("bogus command: err = %v", err)
	}
}

func TestMissingFlagsAreNamed(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"hub":          "--listen is required",
		"join":         "--token is required",
		"controlplane": "--cluster is required",
		"token create": "--hub is required",
	}
	for cmd, want := range cases {
		var out, errOut bytes.Buffer
		err := run(context.Background(), strings.Fields(cmd), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s without flags: err = %v, want %q", cmd, err, want)
		}
	}
}

func TestBadTimersAreRefused(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"hub", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--mesh", "m",
		"--stale-after", "10s", "--dead-after", "5s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--dead-after") {
		t.Errorf("err = %v, want a message about --dead-after", err)
	}
}

// --istio-write writes into a Kubernetes cluster, so it needs one.
func TestIstioWriteNeedsKubernetes(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"controlplane", "--cluster", "east", "--network", "net-east", "--data-dir", t.TempDir(),
		"--config-dir", t.TempDir(), "--istio-write"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("--istio-write without a cluster: err = %v", err)
	}
}

// A kubeconfig that cannot be read is named in the error.
func TestMissingKubeconfigIsNamed(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"join", "--token", "x", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("join with a missing kubeconfig: %v", err)
	}
}
