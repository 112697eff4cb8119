package packages

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

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

// built are the agent, as 'make packages' builds it, and the federate
// CLI, built once per test run.
var built struct {
	once sync.Once
	done chan struct{} // closed once dir and err are set
	dir  string
	err  error
}

// buildBinaries starts the build unless it has started: a test starts it
// first thing, so that it runs while the test sets up.
func buildBinaries() {
	built.once.Do(func() {
		built.done = make(chan struct{})
		go func() {
			defer close(built.done)
			built.dir, built.err = os.MkdirTemp("", "federate-packages-test-")
			if built.err != nil {
				return
			}
			// The agent as 'make packages' builds it: static and stripped.
			agent := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", built.dir+"/", "../../cmd/federate-agent")
			agent.Env = append(os.Environ(), "CGO_ENABLED=0")
			// The CLI as the other packages' tests build it, which shares
			// their build cache.
			federate := exec.Command("go", "build", "-ldflags=-s -w", "-o", built.dir+"/", "../../cmd/federate")
			for _, cmd := range []*exec.Cmd{agent, federate} {
				if out, err := cmd.CombinedOutput(); err != nil {
					built.err = &buildError{out: string(out), err: err}
					return
				}
			}
		}()
	})
}

// binaries waits for the build and returns the paths of the agent and
// the federate CLI.
func binaries(t *testing.T) (agent, federate string) {
	t.Helper()
	buildBinaries()
	select {
	case <-built.done:
	case <-time.After(10 * time.Minute):
		t.Fatal("building the agent and the federate CLI took longer than 10 minutes: run 'go build ./cmd/...' once to fill the build cache")
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, "federate-agent"), filepath.Join(built.dir, "federate")
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }
