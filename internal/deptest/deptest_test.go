// Package deptest enforces the dependency boundaries between packages.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/federate/federate"

// deps lists the packages pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// Lower layers never import the layers built on them; the API's protobuf
// packages (hubpb, agentpb) are shared by all.
func TestLowerLayersDoNotImportUpperLayers(t *testing.T) {
	lower := []string{"locality", "trust", "registry", "registry/file", "registry/store", "registry/kube", "eastwest/sni", "membership", "gossip"}
	upper := []string{"hub", "member", "controlplane", "eastwest", "agent", "cmd/"}
	for _, l := range lower {
		for _, d := range deps(t, module+"/"+l) {
			for _, u := range upper {
				if allowed(d, lower) {
					continue
				}
				if d == module+"/"+strings.TrimSuffix(u, "/") || strings.HasPrefix(d, module+"/"+u+"/") || strings.HasSuffix(u, "/") && strings.HasPrefix(d, module+"/"+u) {
					t.Errorf("%s imports %s", l, d)
				}
			}
		}
	}
}

// The registry model, its file source and the gateway binary link neither
// bbolt nor client-go: the gateway (and the VM agent) stay small.
func TestModelDoesNotLinkBbolt(t *testing.T) {
	for _, pkg := range []string{"registry", "registry/file", "locality", "eastwest/...", "cmd/eastwest-gateway", "agent/...", "cmd/federate-agent"} {
		for _, d := range deps(t, module+"/"+pkg) {
			if strings.HasPrefix(d, "go.etcd.io/bbolt") || strings.HasPrefix(d, "k8s.io/client-go") {
				t.Errorf("%s links %s", pkg, d)
			}
		}
	}
}

// The VM agent talks to its control plane only through agentpb: it links
// neither the hub package (and its store) nor the gateway's data plane.
func TestAgentDoesNotLinkHub(t *testing.T) {
	for _, d := range deps(t, module+"/cmd/federate-agent") {
		if d == module+"/hub" || d == module+"/hub/hubpb" || d == module+"/eastwest" || d == module+"/controlplane/xds" || d == module+"/eastwest/xdsclient" {
			t.Errorf("cmd/federate-agent links %s", d)
		}
	}
}

// The gateway links the xDS client half only, never the control plane's
// snapshot builders and server; the control plane links no data path.
func TestXDSHalvesStayApart(t *testing.T) {
	for _, d := range deps(t, module+"/cmd/eastwest-gateway") {
		if strings.HasPrefix(d, module+"/controlplane") || strings.HasPrefix(d, "github.com/envoyproxy/go-control-plane/pkg/cache") || strings.HasPrefix(d, "github.com/envoyproxy/go-control-plane/pkg/server") {
			t.Errorf("cmd/eastwest-gateway links %s", d)
		}
	}
	for _, d := range deps(t, module+"/controlplane/...") {
		if d == module+"/eastwest" || d == module+"/eastwest/xdsclient" {
			t.Errorf("the control plane links the gateway's %s", d)
		}
	}
}

// The hub and the member are the two ends of the federation API: neither
// links the other, and neither links the control plane built on the member.
func TestHubAndMemberStayApart(t *testing.T) {
	for pkg, banned := range map[string][]string{
		"hub":    {"member", "controlplane"},
		"member": {"hub", "controlplane"},
	} {
		for _, d := range deps(t, module+"/"+pkg) {
			for _, b := range banned {
				if !allowed(d, nil) && (d == module+"/"+b || strings.HasPrefix(d, module+"/"+b+"/")) {
					t.Errorf("%s imports %s", pkg, d)
				}
			}
		}
	}
}

// allowed reports whether d is one of the lower packages or an API's
// generated protobuf package, which every layer may import.
func allowed(d string, lower []string) bool {
	if strings.HasSuffix(d, "pb") {
		return true
	}
	for _, l := range lower {
		if d == module+"/"+l {
			return true
		}
	}
	return false
}
