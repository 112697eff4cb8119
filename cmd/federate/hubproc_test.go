package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/cmd/internal/clitest"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/childproc"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
)

// hubProcess is 'federate hub' running in a child process.
type hubProcess struct {
	cmd    *exec.Cmd
	Addr   string
	Dir    string
	log    *lockedBuffer
	exited chan struct{} // closed when the process ended; then err is set
	err    error
}

// startHubProcess runs a hub in a child process until the test ends, and
// waits until it answers 'federate status'. Cleanup resumes it if a test
// stopped it, then ends it.
func startHubProcess(t *testing.T) *hubProcess {
	t.Helper()
	h := &hubProcess{Addr: testport.Addr(t), Dir: t.TempDir(), log: &lockedBuffer{}, exited: make(chan struct{})}
	args := []string{"hub", "--mesh", "shop", "--listen", h.Addr, "--gossip", "127.0.0.1:0", "--data-dir", h.Dir, "--log-level", "warn", "--metrics-listen", "127.0.0.1:0"}
	h.cmd = clitest.Command(context.Background(), args...)
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	// Should the test binary die, the kernel kills the hub, stopped or not.
	h.cmd.SysProcAttr = childproc.Attr()
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		h.err = h.cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() { h.stop(t) })
	fedtest.EventuallyNil(t, 20*time.Second, "the hub process answers", func() error {
		select {
		case <-h.exited:
			t.Fatalf("the hub process ended: %v\n%s", h.err, h.log.String())
		default:
		}
		_, err := h.federate(t.Context(), "status")
		return err
	})
	return h
}

// stop resumes the hub if it was stopped, then ends it.
func (h *hubProcess) stop(t *testing.T) {
	_ = h.cmd.Process.Signal(syscall.SIGCONT)
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case <-h.exited:
		if h.err != nil {
			t.Errorf("hub process: %v\n%s", h.err, h.log.String())
		}
	case <-timer.C:
		_ = h.cmd.Process.Kill()
		<-h.exited
		t.Errorf("the hub process did not stop within 15s of SIGTERM\n%s", h.log.String())
	}
}

// signal sends sig to the hub process.
func (h *hubProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to the hub: %v", sig, err)
	}
}

// federate runs a CLI command against the hub with its admin credential.
func (h *hubProcess) federate(ctx context.Context, args ...string) (string, error) {
	var out lockedBuffer
	args = append(args, "--hub", h.Addr, "--credential", filepath.Join(h.Dir, hub.AdminCredFile))
	err := run(ctx, args, &out, &out)
	return out.String(), err
}

// memoryKiB reads a field of the process's /proc status: VmRSS, or VmHWM,
// the peak resident size.
func (h *hubProcess) memoryKiB(t *testing.T, field string) int {
	t.Helper()
	return processMemoryKiB(t, h.cmd.Process.Pid, field)
}

// processMemoryKiB reads a field of process pid's /proc status.
func processMemoryKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("/proc status %s: %q", field, v)
			}
			return kib
		}
	}
	t.Fatalf("/proc status has no %s", field)
	return 0
}
