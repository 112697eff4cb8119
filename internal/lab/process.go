package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"google.golang.org/grpc"
)

// processes are every process of the lab, etcd's last.
func (st *State) processes() []int { return append(st.federateProcesses(), st.etcdProcesses()...) }

func (st *State) federateProcesses() []int {
	pids := []int{st.Hub.PID}
	if len(st.Hubs) > 0 {
		pids = nil // Hub is the first replica
	}
	for _, h := range st.Hubs {
		pids = append(pids, h.PID)
	}
	for _, c := range st.Clusters {
		pids = append(pids, c.PID, c.Gateway.PID)
	}
	for _, w := range append(st.Workloads, st.Proxyless...) {
		pids = append(pids, w.AgentPID, w.AppPID)
	}
	return pids
}

func (st *State) etcdProcesses() []int {
	var pids []int
	for _, m := range st.Etcd {
		pids = append(pids, m.PID)
	}
	return pids
}

// Running reports whether any of the lab's processes runs.
func (st *State) Running() bool {
	for _, pid := range st.processes() {
		if alive(pid) {
			return true
		}
	}
	return false
}

// shutdown stops every process and removes the lab's namespaces.
func (st *State) shutdown() int {
	n := st.stop()
	if st.Isolate {
		teardownNetwork(names(st.Clusters))
	}
	return n
}

// stop terminates every process, politely first, etcd's once the hub
// replicas that use it have stopped, and returns how many were running.
func (st *State) stop() int {
	return terminate(st.federateProcesses()) + terminate(st.etcdProcesses())
}

// terminate stops pids, politely first, and returns how many were running.
func terminate(pids []int) int {
	n := 0
	for _, pid := range pids {
		if alive(pid) {
			n++
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling another process's exit
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return n
}

// start runs the binary detached, in its own session, logging to logPath.
func start(bin, logPath string, args ...string) (int, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("lab: start %s %s: %w", bin, args[0], err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() // reap it if it exits while we run
	return pid, nil
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie still answers signal 0; it is not running.
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func waitFile(ctx context.Context, path, what string, p Process) error {
	return poll(ctx, 50*time.Millisecond, func(context.Context) string {
		if _, err := os.Stat(path); err != nil {
			return path + " has not appeared (see " + p.Log + ")"
		}
		return ""
	}, processExited(what, p.PID, p.Log))
}

func waitServing(ctx context.Context, conn *grpc.ClientConn, what string, p Process) error {
	return poll(ctx, 50*time.Millisecond, func(ctx context.Context) string {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := hubpb.NewRegistryClient(conn).Status(cctx, &hubpb.StatusRequest{}); err != nil {
			return fmt.Sprintf("%s does not answer: %v (see %s)", p.Addr, err, p.Log)
		}
		return ""
	}, processExited(what, p.PID, p.Log))
}

// waitReady polls a gateway's health URL until it answers 200.
func waitReady(ctx context.Context, client *http.Client, url, what string, g GatewayState) error {
	return poll(ctx, 50*time.Millisecond, func(ctx context.Context) string {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Sprintf("gateway at %s: %v (see %s)", url, err, g.Log)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Sprintf("gateway at %s is not ready (see %s)", url, g.Log)
		}
		return ""
	}, processExited(what, g.PID, g.Log))
}

// poll calls check every interval until it returns "" (done), exited
// returns an error, or readyTimeout passes; check says what it waits for.
func poll(ctx context.Context, every time.Duration, check func(context.Context) string, exited func() error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		why := check(ctx)
		if why == "" {
			return nil
		}
		if err := exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: not ready after %s: %s", readyTimeout, why)
		case <-tick.C:
		}
	}
}

func processExited(what string, pid int, log string) func() error {
	return func() error {
		if !alive(pid) {
			return exitError(what, log)
		}
		return nil
	}
}

// exitError says that a process exited and shows the end of its log; when
// it exited because an address it was given is taken, it says which.
func exitError(what, log string) error {
	t := tail(log)
	if m := addrInUse.FindStringSubmatch(t); m != nil {
		return fmt.Errorf("lab: %s exited: address %s is already in use (something else bound it after the lab chose it; start the lab again); see %s", what, m[1], log)
	}
	return fmt.Errorf("lab: %s exited; see %s:\n%s", what, log, t)
}

// tail returns the last lines of a log file.
func tail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}
