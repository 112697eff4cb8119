package kubetest

import (
	"bytes"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/federate/federate/internal/childproc"
)

// process is a started etcd or kube-apiserver whose output goes to a log
// file.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // how it exited; set before done is closed
}

// startProcess starts cmd with its stdout and stderr in logPath, and
// watches for its exit.
func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childproc.Attr()
	err = cmd.Start()
	f.Close()
	if err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited, and if so how.
func (p *process) exited() (bool, string) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, "exit status 0"
		}
		return true, p.err.Error()
	default:
		return false, ""
	}
}

// stop asks the process to stop, kills it after stopTimeout, and waits
// for it.
func (p *process) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the end of a log file, from the start of a line.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(data) > max {
		data = data[len(data)-max:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return string(data)
}
