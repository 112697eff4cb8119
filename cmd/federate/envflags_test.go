package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
)

// $FEDERATE_HUB and $FEDERATE_CREDENTIAL stand in for --hub and
// --credential in every client command; flags go before or after a
// positional argument; -o yaml and -o json print one shape.
func TestClientCommandsTakeEnvAndFlagsAnywhere(t *testing.T) {
	h := startHubProcess(t)
	admin := filepath.Join(h.Dir, hub.AdminCredFile)
	t.Setenv("FEDERATE_HUB", h.Addr)
	t.Setenv("FEDERATE_CREDENTIAL", admin)

	// token create: neither flag, YAML out.
	dirs := map[string]string{}
	for _, cluster := range []string{"north", "south", "east"} {
		var tok tokenJSON
		if err := yaml.Unmarshal([]byte(runOK(t, "token", "create", "--cluster", cluster, "-o", "yaml")), &tok); err != nil {
			t.Fatal(err)
		}
		if tok.Cluster != cluster || !strings.HasPrefix(tok.Token, "fedjoin1.") || tok.ExpiresAt == "" {
			t.Fatalf("token create -o yaml for %s: %+v", cluster, tok)
		}
		dirs[cluster] = t.TempDir()
		runOK(t, "join", "--token", tok.Token, "--data-dir", dirs[cluster])
	}
	// east runs a control plane, so that the hub lists it.
	background(t, "controlplane", "--cluster", "east", "--network", "net-east", "--locality", "r/z", "--data-dir", dirs["east"],
		"--config-dir", t.TempDir(), "--listen", testport.Addr(t), "--gossip", testport.Addr(t), "--metrics-listen", "127.0.0.1:0", "--log-level", "warn")
	fedtest.EventuallyNil(t, 30*time.Second, "the hub lists east", func() error {
		if out, err := runErr(t, "status"); err != nil || !strings.Contains(out, "east") {
			return fmt.Errorf("status: %v\n%s", err, out)
		}
		return nil
	})

	// status: YAML and JSON are one document.
	var fromYAML, fromJSON statusJSON
	if err := yaml.Unmarshal([]byte(runOK(t, "status", "-o", "yaml")), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(runOK(t, "status", "-o", "json")), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if fromYAML.Mesh != "shop" || fromYAML.Timers["staleAfter"] != "30s" || fromYAML.Mesh != fromJSON.Mesh || fromYAML.Timers["deadAfter"] != fromJSON.Timers["deadAfter"] {
		t.Errorf("status -o yaml %+v, -o json %+v", fromYAML, fromJSON)
	}

	// Completion asks the hub for the cluster names.
	for _, args := range [][]string{{"cluster", "remove", ""}, {"trust", "rotate", "--cluster", ""}} {
		if got := strings.Fields(runOK(t, append([]string{"__complete"}, args...)...)); !contains(got, "east") {
			t.Errorf("completing %q: %v, want east from the hub", args, got)
		}
	}

	// trust rotate finds the hub, then east's control plane, through the
	// environment, and prints each step as a JSON line.
	lines := strings.Split(strings.TrimSpace(runOK(t, "trust", "rotate", "--cluster", "east", "-o", "json")), "\n")
	for _, line := range lines {
		var step rotationJSON
		if err := json.Unmarshal([]byte(line), &step); err != nil || step.Cluster != "east" || step.Phase == "" || step.BundleSequence == 0 {
			t.Errorf("trust rotate -o json: line %q (%v), want a step of east's rotation", line, err)
		}
	}

	// cluster remove: flags before the name, then after it.
	for _, tc := range []struct {
		cluster string
		args    []string
	}{
		{"north", []string{"cluster", "remove", "--hub", h.Addr, "-o", "json", "north"}},
		{"south", []string{"cluster", "remove", "south", "--credential", admin, "-o", "json"}},
	} {
		var removal removalJSON
		if err := json.Unmarshal([]byte(runOK(t, tc.args...)), &removal); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if removal.Cluster != tc.cluster || len(removal.Credentials) != 1 {
			t.Errorf("%v removed %+v, want %s with its one credential", tc.args, removal, tc.cluster)
		}
	}
}

func runErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out lockedBuffer
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	err := run(ctx, args, &out, &out)
	return out.String(), err
}
