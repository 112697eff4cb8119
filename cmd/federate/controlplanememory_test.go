package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/cmd/internal/clitest"
	"github.com/federate/federate/internal/childproc"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// startControlPlaneProcess joins cluster to h's mesh and runs its control
// plane, with an empty config directory, in a child process until the
// test ends; it returns once the API accepts connections.
func startControlPlaneProcess(t *testing.T, h *hubProcess, cluster string) (pid int, addr string) {
	t.Helper()
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	out, err := h.federate(ctx, "token", "create", "--cluster", cluster)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	dir := t.TempDir()
	runOK(t, "join", "--token", strings.Fields(out)[0], "--data-dir", filepath.Join(dir, "data"))
	addr = testport.Addr(t)
	log := &lockedBuffer{}
	cmd := clitest.Command(context.Background(), "controlplane", "--cluster", cluster, "--network", "net-"+cluster, "--locality", "r/z",
		"--data-dir", filepath.Join(dir, "data"), "--config-dir", t.TempDir(), "--listen", addr, "--gossip", testport.Addr(t),
		"--log-level", "warn", "--metrics-listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childproc.Attr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	fedtest.EventuallyNil(t, 30*time.Second, "the control plane process listens", func() error {
		select {
		case err := <-exited:
			t.Fatalf("the control plane process ended: %v\n%s", err, log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	return cmd.Process.Pid, addr
}

// The control plane's API, which the east-west gateway exposes to every
// network for VM agents, reads a Bootstrap from callers without a client
// certificate. Eight concurrent 60 MB ones must be cut off long before
// they are read: the control plane's peak resident memory may grow by a
// few MiB, not by the 480 MB sent.
func TestControlPlaneBoundsUnauthenticatedBootstraps(t *testing.T) {
	t.Parallel()
	const callers, size = 8, 60 << 20
	const maxGrowthKiB = 48 << 10
	h := startHubProcess(t)
	pid, addr := startControlPlaneProcess(t, h, "east")
	ctx := fedtest.DeadlineContext(t, 90*time.Second)
	rssBefore, peakBefore := processMemoryKiB(t, pid, "VmRSS"), processMemoryKiB(t, pid, "VmHWM")
	bootstrap, err := proto.Marshal(&agentpb.BootstrapRequest{Token: "fedvm1.not.atoken", Csr: make([]byte, size)})
	if err != nil {
		t.Fatal(err)
	}

	errs, took := callWithoutCertificate(ctx, t, addr, agentpb.Workloads_Bootstrap_FullMethodName, bootstrap, callers, func() any { return new(agentpb.BootstrapResponse) })
	rssAfter, peakAfter := processMemoryKiB(t, pid, "VmRSS"), processMemoryKiB(t, pid, "VmHWM")
	t.Logf("%d concurrent %d MiB Bootstraps without a certificate answered in %s; control plane VmRSS %d MiB before, %d MiB after; peak (VmHWM) %d MiB before, %d MiB after",
		callers, size>>20, took.Round(time.Millisecond), rssBefore>>10, rssAfter>>10, peakBefore>>10, peakAfter>>10)
	for i, err := range errs {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("bootstrap %d of %d MiB: %v, want its connection closed (Unavailable)", i, size>>20, err)
		}
	}
	if growth := peakAfter - rssBefore; growth > maxGrowthKiB {
		t.Errorf("the control plane's peak memory grew by %d MiB, want under %d MiB", growth>>10, maxGrowthKiB>>10)
	}
}
