package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/cmd/internal/clitest"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/internal/fedtest"
)

func TestMain(m *testing.M) {
	clitest.Main("eastwest-gateway", run)
	fedtest.Main(m)
}

// gatewayProcess runs the gateway's command line in its own process, with
// no credential from the environment.
func gatewayProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return clitest.Run(t, []string{"FEDERATE_CREDENTIAL="}, args...)
}

// Usage errors exit 2 on stderr; --help and version answer on stdout; a
// missing credential file is a failure, exit 1.
func TestGatewayCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, cli.ExitUsage, "eastwest-gateway: --control-plane and --credential (or $FEDERATE_CREDENTIAL) are required\nRun 'eastwest-gateway --help' for usage.\n"},
		{[]string{"--control-plane", "a:1", "--credential", "c.pem", "--log-format", "xml"}, cli.ExitUsage, `--log-format "xml"`},
		{[]string{"--listen"}, cli.ExitUsage, "flag needs an argument: --listen"},
		{[]string{"serve"}, cli.ExitUsage, `unexpected argument "serve"`},
		{[]string{"--control-plane", "a:1", "--credential", "/nonexistent/gateway.pem"}, 1, "--credential /nonexistent/gateway.pem does not exist: the control plane writes"},
	} {
		stdout, stderr, code := gatewayProcess(t, tc.args...)
		if code != tc.code || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q on stderr", tc.args, code, stdout, stderr, tc.code, tc.want)
		}
	}
	stdout, stderr, code := gatewayProcess(t, "--help")
	for _, f := range []string{"--control-plane", "--credential", "--ca", "--listen", "--health", "--node-id", "--log-level", "--log-format"} {
		if !strings.Contains(stdout, "  "+f+" ") {
			t.Errorf("--help does not document %s", f)
		}
	}
	if code != 0 || stderr != "" {
		t.Errorf("--help: exit %d, stderr %q", code, stderr)
	}
	stdout, _, code = gatewayProcess(t, "version", "-o", "json")
	var info cli.Info
	if err := json.Unmarshal([]byte(stdout), &info); err != nil || code != 0 || info != cli.BuildInfo() {
		t.Errorf("version -o json: exit %d, %q (%v)", code, stdout, err)
	}
}

// The gateway's /metrics carries federate_build_info.
func TestGatewayMetricsHaveBuildInfo(t *testing.T) {
	routes := &xdsclient.Routes{}
	gw, err := eastwest.New(eastwest.Config{Router: routes, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(healthHandler(routes, gw))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	i := cli.BuildInfo()
	want := `federate_build_info{binary="eastwest-gateway",commit="` + i.Commit + `",goversion="` + i.GoVersion + `",version="` + i.Version + `"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s:\n%s", want, body)
	}
}

// /livez answers while the process runs, whatever the control plane;
// /healthz/ready waits for the first routes.
func TestLivenessIsApartFromReadiness(t *testing.T) {
	routes := &xdsclient.Routes{}
	gw, err := eastwest.New(eastwest.Config{Router: routes, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := healthHandler(routes, gw)
	code := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if got := code("/livez"); got != http.StatusOK {
		t.Errorf("/livez of a gateway without routes: %d, want 200", got)
	}
	if got := code("/healthz/ready"); got != http.StatusServiceUnavailable {
		t.Errorf("/healthz/ready without routes: %d, want 503", got)
	}
	routes.Set(&xdsclient.Table{})
	if got := code("/healthz/ready"); got != http.StatusOK {
		t.Errorf("/healthz/ready with routes: %d, want 200", got)
	}
}
