// Package clitest runs a command's command line in a child process made
// from its own test binary, so a test sees the exit code, stdout and stderr
// a user's shell would see.
package clitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/cmd/internal/cli"
)

// argsEnv holds the command line (a JSON list) a child runs instead of the
// tests.
const argsEnv = "FEDERATE_TEST_CHILD_ARGS"

// Main is called first in a command's TestMain: in a child it runs the
// command line and exits as the command's main does; otherwise it returns.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	encoded, ok := os.LookupEnv(argsEnv)
	if !ok {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(encoded), &args); err != nil {
		fmt.Fprintln(os.Stderr, name+" test child:", argsEnv, err)
		os.Exit(cli.ExitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.ExitCode(name, run(ctx, args, os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// Command is the command line args in a child process; the caller may add
// to its Env and set its output before starting it.
func Command(ctx context.Context, args ...string) *exec.Cmd {
	encoded, _ := json.Marshal(args)
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), argsEnv+"="+string(encoded))
	return cmd
}

// Run runs the command line args in a child process with env added to its
// environment, within 30 s, and returns its stdout, stderr and exit code.
func Run(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := Command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	var exit *exec.ExitError
	if err := cmd.Run(); err != nil && !errors.As(err, &exit) {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}
