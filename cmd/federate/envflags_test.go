package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
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
	for _, cluster := range []string{"north", "south"} {
		var tok tokenJSON
		if err := yaml.Unmarshal([]byte(runOK(t, "token", "create", "--cluster", cluster, "-o", "yaml")), &tok); err != nil {
			t.Fatal(err)
		}
		if tok.Cluster != cluster || !strings.HasPrefix(tok.Token, "fedjoin1.") || tok.ExpiresAt == "" {
			t.Fatalf("token create -o yaml for %s: %+v", cluster, tok)
		}
		runOK(t, "join", "--token", tok.Token, "--data-dir", t.TempDir())
	}

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

	// trust rotate finds the hub through the environment: the hub answers
	// that it has no control plane address for north yet.
	if _, err := runErr(t, "trust", "rotate", "--cluster", "north"); err == nil || !strings.Contains(err.Error(), `cluster "north"`) {
		t.Errorf("trust rotate with $FEDERATE_HUB: %v, want the hub's answer about north", err)
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
