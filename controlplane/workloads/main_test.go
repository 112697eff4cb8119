package workloads_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
)

func TestMain(m *testing.M) {
	fedtest.MainThen(m, func() {
		if built.done != nil {
			<-built.done
			os.RemoveAll(built.dir)
		}
	})
}

// testTimers declare a silent cluster stale, dead and expired within
// seconds.
var testTimers = gossip.Timers{StaleAfter: 3 * time.Second, DeadAfter: 5 * time.Second, ExpireAfter: 8 * time.Second}

// built are the federate CLI and the agent, built once per test run.
var built struct {
	once sync.Once
	done chan struct{} // closed once dir and err are set
	dir  string
	err  error
}

// buildBinaries starts building the federate CLI and the agent, unless
// that has started: a test starts it first thing, so that the build runs
// while the test sets up its clusters.
func buildBinaries() {
	built.once.Do(func() {
		built.done = make(chan struct{})
		go func() {
			defer close(built.done)
			built.dir, built.err = os.MkdirTemp("", "federate-vm-test-")
			if built.err != nil {
				return
			}
			// Without symbol table and DWARF, which the tests do not need,
			// the link is faster.
			cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", built.dir+"/", "../../cmd/federate", "../../cmd/federate-agent")
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = &buildError{out: string(out), err: err}
			}
		}()
	})
}

// binaries waits for the build and returns the paths of the federate CLI
// and the agent.
func binaries(t *testing.T) (federate, agent string) {
	t.Helper()
	buildBinaries()
	select {
	case <-built.done:
	case <-time.After(5 * time.Minute):
		t.Fatal("building the federate CLI and the agent took longer than 5 minutes")
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, "federate"), filepath.Join(built.dir, "federate-agent")
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }
