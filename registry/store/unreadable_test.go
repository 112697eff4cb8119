package store_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/federate/federate/registry/store"
)

// The child side of TestOpenFileWithoutPermission opens a store and prints
// the error.
const noPermissionChildEnv = "FEDERATE_STORE_NO_PERMISSION_CHILD"

// A store file that this process may not open (it belongs to another
// user, as after a change of the service's user) is reported as such,
// with what to do: it is not damaged, and moving it aside, as a damaged
// file's error says, would throw its state away.
func TestOpenFileWithoutPermission(t *testing.T) {
	if path := os.Getenv(noPermissionChildEnv); path != "" {
		_, err := store.Open(path)
		if err == nil {
			os.Stdout.WriteString("opened\n")
			return
		}
		if _, ok := errors.AsType[*store.DamagedError](err); ok {
			os.Stdout.WriteString("damaged: ")
		}
		os.Stdout.WriteString(err.Error() + "\n")
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("runs the store as another user on Linux")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	filledStore(t, path, 10)

	var out string
	if os.Geteuid() != 0 {
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		_, err := store.Open(path)
		if err == nil {
			t.Fatal("Open of a file without permission succeeded")
		}
		if _, ok := errors.AsType[*store.DamagedError](err); ok {
			out = "damaged: "
		}
		out += err.Error()
	} else {
		// Root opens any file: open it as nobody, from a copy of this
		// test binary that nobody may run.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		exe, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "store.test")
		if err := os.WriteFile(bin, exe, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^TestOpenFileWithoutPermission$")
		cmd.Env = append(os.Environ(), noPermissionChildEnv+"="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the child failed: %v\n%s", err, b)
		}
		out = string(b)
	}
	if strings.HasPrefix(out, "opened") {
		t.Fatal("Open of a file without permission succeeded")
	}
	for _, w := range []string{path, "permission denied", "chown"} {
		if !strings.Contains(out, w) {
			t.Errorf("Open: %q, want it to name %q", out, w)
		}
	}
	if strings.HasPrefix(out, "damaged: ") || strings.Contains(out, "move it aside and restart") {
		t.Errorf("Open: %q reports a file it may not open as damaged", out)
	}
}
