package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/cmd/internal/clitest"
)

// A wrong command line exits 2, says what is wrong and where the help is
// on stderr, and prints nothing on stdout; a failure of the work exits 1;
// help exits 0 on stdout.
func TestUsageErrorsExitTwoOnStderr(t *testing.T) {
	t.Parallel()
	xds := []string{"xds", "bootstrap", "--control-plane", "a:1", "--namespace", "shop", "--name", "c"}
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	group := filepath.Join(dir, "barista.yaml")
	if err := os.WriteFile(group, []byte("apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: barista, namespace: shop}\nspec:\n  metadata: {labels: {app: barista}}\n  template: {serviceAccount: barista}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args     []string
		code     int
		want     string // on stderr
		wantHelp string // the command whose help stderr points at
	}{
		{nil, cli.ExitUsage, "no command given", "federate"},
		{[]string{"statsu"}, cli.ExitUsage, `unknown command "statsu": did you mean "status"?`, "federate"},
		{[]string{"status", "--bogus"}, cli.ExitUsage, "unknown flag: --bogus", "federate status"},
		{[]string{"status", "-o", "xml", "--hub", "h:1"}, cli.ExitUsage, `-o "xml": want table, json or yaml`, "federate status"},
		{[]string{"token"}, cli.ExitUsage, "want 'token create'", "federate token"},
		{[]string{"lab", "sideways"}, cli.ExitUsage, `unknown subcommand "sideways": want 'lab down', 'lab status', 'lab up', 'lab verify'`, "federate lab"},
		{[]string{"token", "create", "--cluster", "east"}, cli.ExitUsage, "--hub is required", "federate token create"},
		{[]string{"hub", "--listen", "127.0.0.1:0"}, cli.ExitUsage, "--data-dir is required", "federate hub"},
		{[]string{"cluster", "remove", "--hub", "h:1"}, cli.ExitUsage, "name the cluster to remove", "federate cluster remove"},
		{[]string{"cluster", "remove", "a", "b", "--hub", "h:1"}, cli.ExitUsage, `unexpected argument "b"`, "federate cluster remove"},
		{[]string{"cluster", "remove", "Central", "--hub", "h:1"}, cli.ExitUsage, `NAME: cluster name "Central" must be lowercase letters`, "federate cluster remove"},
		{[]string{"token", "create", "--hub", "h:1", "--cluster", "east_1"}, cli.ExitUsage, `--cluster: cluster name "east_1" must be lowercase letters`, "federate token create"},
		{append(xds, "extra"), cli.ExitUsage, `unexpected argument "extra"`, "federate xds bootstrap"},
		{[]string{"hub", "--listen", ":15012", "--data-dir", "d", "--mesh", "m", "--log-format", "xml"}, cli.ExitUsage, `--log-format "xml": want text or json`, "federate hub"},
		{[]string{"status", "--hub", "127.0.0.1:1", "--credential", missing}, 1, "--credential " + missing + " does not exist: want the hub's admin.pem", ""},
		{[]string{"status", "--hub", "127.0.0.1:1", "--credential", dir}, 1, "--credential " + dir + " is a directory", ""},
		{[]string{"status", "--hub", "nohost", "--credential", missing}, cli.ExitUsage, `--hub "nohost": want HOST:PORT`, "federate status"},
		{[]string{"status", "--server", "10.0.0.5", "--credential", missing}, cli.ExitUsage, `--server "10.0.0.5": want HOST:PORT`, "federate status"},
		{[]string{"token", "create", "--hub", "h:1,h2", "--cluster", "east"}, cli.ExitUsage, `--hub "h2": want HOST:PORT`, "federate token create"},
		{[]string{"token", "create", "--hub", "h:1", "--cluster", "east", "--ttl", "200h"}, cli.ExitUsage, "--ttl 200h0m0s is longer than the hub grants, 168h0m0s", "federate token create"},
		{[]string{"lab", "up", "--dir", dir, "--clusters", "1"}, cli.ExitUsage, "--clusters 1: a lab has 2 to 50 clusters", "federate lab up"},
		{[]string{"lab", "up", "--dir", dir, "--log-level", "loud"}, cli.ExitUsage, `--log-level "loud": want debug, info, warn or error`, "federate lab up"},
		// Before the data directory gets its CA (checked below).
		{[]string{"hub", "--listen", "15012", "--data-dir", filepath.Join(dir, "hub"), "--mesh", "m"}, cli.ExitUsage, `--listen "15012": want [HOST]:PORT, e.g. 0.0.0.0:15012`, "federate hub"},
		{[]string{"hub", "--listen", ":15012", "--advertise", "15012", "--data-dir", filepath.Join(dir, "hub"), "--mesh", "m"}, cli.ExitUsage, `--advertise "15012": want HOST:PORT`, "federate hub"},
		// Before the control plane is asked for a token: none is made.
		{[]string{"vm", "configure", "-f", group, "--cluster", "east", "--control-plane", "127.0.0.1:1", "-o", filepath.Join(group, "out")}, 1, "--output " + filepath.Join(group, "out") + ": ", ""},
	}
	for _, tc := range cases {
		stdout, stderr, code := clitest.Run(t, nil, tc.args...)
		if code != tc.code {
			t.Errorf("federate %v: exit code %d, want %d\nstderr: %s", tc.args, code, tc.code, stderr)
		}
		if stdout != "" {
			t.Errorf("federate %v: wrote to stdout:\n%s", tc.args, stdout)
		}
		if !strings.Contains(stderr, "federate: "+tc.want) {
			t.Errorf("federate %v: stderr %q, want %q after 'federate: '", tc.args, stderr, tc.want)
		}
		if hint := "Run '" + tc.wantHelp + " --help' for usage."; tc.wantHelp != "" && !strings.Contains(stderr, hint) {
			t.Errorf("federate %v: stderr %q lacks %q", tc.args, stderr, hint)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "hub")); !os.IsNotExist(err) {
		t.Errorf("a hub refused for its flags left a data directory behind (%v)", err)
	}
	// Without a command, the commands are listed on stderr.
	if _, stderr, _ := clitest.Run(t, nil); !strings.Contains(stderr, "Available Commands:\n  cluster") {
		t.Errorf("federate without a command: stderr lacks the commands:\n%s", stderr)
	}
	stdout, stderr, code := clitest.Run(t, nil, "cluster", "remove", "--help")
	if code != 0 || stderr != "" || !strings.Contains(stdout, "federate cluster remove NAME") {
		t.Errorf("cluster remove --help: exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
}

// The completion command writes each shell's script, and the completions
// it serves name the subcommands, the -o values and the log formats.
func TestCompletion(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{
		"bash":       "__start_federate",
		"zsh":        "#compdef federate",
		"fish":       "complete -c federate",
		"powershell": "Register-ArgumentCompleter",
	} {
		if out := runOK(t, "completion", shell); !strings.Contains(out, want) {
			t.Errorf("completion %s lacks %q", shell, want)
		}
	}
	cases := []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"cluster", "re"}, []string{"remove"}, nil},
		{[]string{"lab", ""}, []string{"up", "verify", "status", "down"}, []string{"grpc-app"}},
		{[]string{"status", "-o", ""}, []string{"table", "json", "yaml"}, nil},
		{[]string{"hub", "--log-format", ""}, []string{"text", "json"}, nil},
		{[]string{"cluster", "remove", "central", "--h"}, []string{"--hub", "--help"}, nil},
		{[]string{"join", "--con"}, []string{"--context"}, nil},
	}
	for _, tc := range cases {
		out := runOK(t, append([]string{"__complete"}, tc.args...)...)
		got := strings.Fields(out)
		for _, w := range tc.want {
			if !contains(got, w) {
				t.Errorf("completing %q: %v lacks %q", tc.args, got, w)
			}
		}
		for _, w := range tc.not {
			if contains(got, w) {
				t.Errorf("completing %q offers the hidden %q", tc.args, w)
			}
		}
	}
}

func contains(words []string, w string) bool {
	for _, x := range words {
		if strings.SplitN(x, "\t", 2)[0] == w {
			return true
		}
	}
	return false
}

// 'federate version' reports the Go toolchain's build info, in each
// format.
func TestVersion(t *testing.T) {
	t.Parallel()
	var info cli.Info
	if err := json.Unmarshal([]byte(runOK(t, "version", "-o", "json")), &info); err != nil {
		t.Fatal(err)
	}
	want := cli.BuildInfo()
	if info != want || !strings.HasPrefix(info.GoVersion, "go1.") {
		t.Errorf("version -o json = %+v, want %+v", info, want)
	}
	if out := runOK(t, "version", "-o", "yaml"); !strings.Contains(out, "goVersion: "+want.GoVersion+"\n") {
		t.Errorf("version -o yaml:\n%s", out)
	}
	if out := runOK(t, "version"); !strings.Contains(out, "VERSION") || !strings.Contains(out, want.GoVersion) {
		t.Errorf("version:\n%s", out)
	}
}
