package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/cmd/internal/clitest"
	"github.com/federate/federate/internal/fedtest"
)

func TestMain(m *testing.M) {
	clitest.Main("federate-agent", run)
	fedtest.Main(m)
}

// agentProcess runs the agent's command line in its own process.
func agentProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return clitest.Run(t, nil, args...)
}

// Usage errors exit 2 on stderr, in the agent and its svid mode; --help
// and version answer on stdout; a missing bootstrap is a failure, exit 1.
func TestAgentCommandLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--log-level", "loud"}, cli.ExitUsage, "federate-agent: --log-level \"loud\": want debug, info, warn or error\nRun 'federate-agent --help' for usage.\n"},
		{[]string{"svid", "--bundle-refresh", "0s"}, cli.ExitUsage, "Run 'federate-agent svid --help' for usage."},
		{[]string{"svid", "--svid-dir", dir, "--state-dir", dir}, cli.ExitUsage, "are both"},
		{[]string{"--bogus"}, cli.ExitUsage, "unknown flag: --bogus"},
		{[]string{"extra"}, cli.ExitUsage, `unexpected argument "extra"`},
		{[]string{"--address", "vm-1"}, cli.ExitUsage, `--address "vm-1": want this VM's IP address`},
		{[]string{"svid", "--config-dir", dir + "/none", "--state-dir", dir + "/state", "--svid-dir", dir + "/svid"}, 1, "cluster.env: missing"},
	} {
		stdout, stderr, code := agentProcess(t, tc.args...)
		if code != tc.code || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q on stderr", tc.args, code, stdout, stderr, tc.code, tc.want)
		}
	}
	stdout, stderr, code := agentProcess(t, "--help")
	for _, f := range []string{"--config-dir", "--state-dir", "--address", "--metrics-listen", "--log-level", "--log-format"} {
		if !strings.Contains(stdout, "  "+f+" ") {
			t.Errorf("--help does not document %s", f)
		}
	}
	if code != 0 || stderr != "" || !strings.Contains(stdout, "federate-agent svid") {
		t.Errorf("--help: exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
	for _, args := range [][]string{{"--help"}, {"svid", "--help"}} {
		if c := rootCommand(); !strings.Contains(helpOf(t, c, args), "Examples:\n  ") {
			t.Errorf("federate-agent %s shows no example", strings.Join(args, " "))
		}
	}
	stdout, _, code = agentProcess(t, "version", "-o", "yaml")
	if code != 0 || !strings.Contains(stdout, "goVersion: "+cli.BuildInfo().GoVersion) {
		t.Errorf("version -o yaml: exit %d, %q", code, stdout)
	}
}

// The agent's /metrics carries federate_build_info.
func TestAgentMetricsHaveBuildInfo(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	stop, err := serveMetrics(addr, prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_test"}), func() bool { return true }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	i := cli.BuildInfo()
	want := `federate_build_info{binary="federate-agent",commit="` + i.Commit + `",goversion="` + i.GoVersion + `",version="` + i.Version + `"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s:\n%s", want, body)
	}
}

// helpOf is what the command line args print on stdout, in this process.
func helpOf(t *testing.T, root *cobra.Command, args []string) string {
	t.Helper()
	var out strings.Builder
	if err := cli.Execute(t.Context(), root, args, &out, io.Discard); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String()
}
