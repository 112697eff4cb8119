package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// testRoot is a binary with a group and a leaf that takes one name.
func testRoot(got *[]string) *cobra.Command {
	var hub string
	remove := &cobra.Command{Use: "remove NAME", Args: cobra.ExactArgs(1), RunE: func(_ *cobra.Command, args []string) error {
		*got = append(args, hub)
		return nil
	}}
	remove.Flags().StringVar(&hub, "hub", "", "hub address")
	root := &cobra.Command{Use: "bin", Args: NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	root.AddCommand(Group("cluster", "clusters", "Clusters.", remove), VersionCommand("bin"))
	return root
}

func TestExecuteReportsUsageErrors(t *testing.T) {
	cases := []struct {
		args    []string
		code    int
		command string
		want    string
	}{
		{[]string{"cluster", "remove", "--hub", "h", "a"}, 0, "", ""},
		{[]string{"cluster", "remove", "a", "--hub", "h"}, 0, "", ""},
		{[]string{"cluster", "remove", "--nope", "a"}, ExitUsage, "bin cluster remove", "unknown flag: --nope"},
		{[]string{"cluster"}, ExitUsage, "bin cluster", "want 'cluster remove'"},
		{[]string{"cluster", "add"}, ExitUsage, "bin cluster", `unknown subcommand "add"`},
		{[]string{"extra"}, ExitUsage, "bin", `unexpected argument "extra"`},
		{[]string{"version", "-o", "toml"}, ExitUsage, "bin version", `-o "toml"`},
	}
	for _, tc := range cases {
		var got []string
		var stdout, stderr bytes.Buffer
		err := Execute(context.Background(), testRoot(&got), tc.args, &stdout, &stderr)
		if code := ExitCode("bin", err, &stderr); code != tc.code {
			t.Errorf("%v: exit code %d (%v), want %d", tc.args, code, err, tc.code)
		}
		if tc.code == 0 {
			if strings.Join(got, " ") != "a h" {
				t.Errorf("%v: ran with %v, want [a h]", tc.args, got)
			}
			continue
		}
		var u *UsageError
		if !errors.As(err, &u) || u.Command != tc.command {
			t.Errorf("%v: err %#v, want a usage error of %q", tc.args, err, tc.command)
		}
		want := "bin: " + tc.want
		if !strings.HasPrefix(stderr.String(), want) || !strings.Contains(stderr.String(), "Run '"+tc.command+" --help' for usage.") || stdout.Len() > 0 {
			t.Errorf("%v: stderr %q, stdout %q, want %q and the help pointer", tc.args, stderr.String(), stdout.String(), want)
		}
	}
	// A one-letter flag keeps its old long spelling, as Go's flag package
	// took it: --o for -o.
	var stdout, stderr bytes.Buffer
	if err := Execute(context.Background(), testRoot(new([]string)), []string{"version", "--o", "json"}, &stdout, &stderr); err != nil || !json.Valid(stdout.Bytes()) {
		t.Errorf("version --o json: %v, %q", err, stdout.String())
	}
	stderr.Reset()
	if code := ExitCode("bin", errors.New("the hub does not answer"), &stderr); code != 1 || stderr.String() != "bin: the hub does not answer\n" {
		t.Errorf("a failure: exit code %d, stderr %q", code, stderr.String())
	}
}

func TestOutputFormatsHaveOneShape(t *testing.T) {
	v := struct {
		Mesh     string   `json:"mesh"`
		Clusters []string `json:"clusters"`
	}{"shop", []string{"east", "west"}}
	want := map[string]string{
		"table": "TABLE\n",
		"json":  "{\n  \"mesh\": \"shop\",\n  \"clusters\": [\n    \"east\",\n    \"west\"\n  ]\n}\n",
		"yaml":  "clusters:\n- east\n- west\nmesh: shop\n",
	}
	for format, w := range want {
		o := Output{format: format}
		if err := o.Check(); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := o.Print(&buf, v, func(w io.Writer) error { _, err := io.WriteString(w, "TABLE\n"); return err }); err != nil {
			t.Fatal(err)
		}
		if buf.String() != w {
			t.Errorf("-o %s:\n%s\nwant\n%s", format, buf.String(), w)
		}
	}
	if err := (&Output{format: "wide"}).Check(); err == nil {
		t.Error("-o wide accepted")
	}
}

// The version and the build-info gauge come from the binary's build info.
func TestBuildInfo(t *testing.T) {
	i := BuildInfo()
	if i.GoVersion != runtime.Version() || i.Version == "" || i.Commit == "" {
		t.Errorf("BuildInfo() = %+v, want the Go version %s and no empty field", i, runtime.Version())
	}
	c := BuildInfoCollector("bin")
	want := `# HELP federate_build_info Always 1; the labels say which build of which binary runs.
# TYPE federate_build_info gauge
federate_build_info{binary="bin",commit="` + i.Commit + `",goversion="` + i.GoVersion + `",version="` + i.Version + `"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "federate_build_info"); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Error(err)
	}
}

// --log-format json writes one JSON object per line, and klog's lines
// (client-go's) come through the same handler once bridged.
func TestLogFormatsAndKlogBridge(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"text", "level=WARN msg=\"disk low\" free=3\n"},
		{"json", `"level":"WARN","msg":"disk low","free":3}`},
	} {
		var l LogFlags
		c := &cobra.Command{Use: "x"}
		l.Register(c)
		if err := c.ParseFlags([]string{"--log-format", tc.format, "--log-level", "warn"}); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		log, err := l.Logger(&buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hidden below warn")
		log.Warn("disk low", "free", 3)
		if !strings.Contains(buf.String(), tc.want) || strings.Contains(buf.String(), "hidden") {
			t.Errorf("--log-format %s: %q, want %q", tc.format, buf.String(), tc.want)
		}
	}
	var l LogFlags
	l.level, l.format = "info", "json"
	var buf bytes.Buffer
	log, err := l.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	BridgeKlog(slog.New(slog.DiscardHandler))
	BridgeKlog(log) // the latest wins
	klog.InfoS("watch restarted", "resource", "services")
	klog.Background().WithValues("informer", "slices").Info("synced")
	klog.Flush()
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	var first, second map[string]any
	if len(lines) != 2 || json.Unmarshal(lines[0], &first) != nil || json.Unmarshal(lines[1], &second) != nil ||
		first["msg"] != "watch restarted" || first["resource"] != "services" || second["informer"] != "slices" {
		t.Errorf("klog through slog: %q, want two JSON lines with klog's values", buf.String())
	}
	for _, bad := range [][2]string{{"loud", "text"}, {"info", "xml"}} {
		l.level, l.format = bad[0], bad[1]
		var u *UsageError
		if _, err := l.Logger(&buf); !errors.As(err, &u) {
			t.Errorf("--log-level %s --log-format %s: %v, want a usage error", bad[0], bad[1], err)
		}
	}
}
