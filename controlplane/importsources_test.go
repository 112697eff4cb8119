package controlplane_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
)

const serviceImportYAML = `apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: order
  namespace: shop
`

const cartSidecarYAML = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: shop
spec:
  egress:
  - hosts: ["*/cart.shop.svc.cluster.local"]
`

// writeAtomically replaces a config file by rename, as docs/imports.md
// asks.
func writeAtomically(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The sources of imports are merged: the config directory's ServiceImports
// and Sidecars scope the cluster and are followed as they change, and a VM
// agent's outbound list adds what its sidecar calls for as long as its
// entry lives.
func TestIntegrationControlPlaneImportSources(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	t.Cleanup(tm.StopMembers)
	startEastServingCoffee(tm)
	tm.Join("west")
	dir := t.TempDir()
	imports := filepath.Join(dir, "imports.yaml")
	writeAtomically(t, imports, serviceImportYAML)
	cp := tm.StartControlPlane("west", controlplane.Config{Source: fedtest.NewSource(), ConfigDir: dir,
		ConfigInterval: 50 * time.Millisecond, VMGrace: time.Second})
	m := cp.Member()
	holds := func(want ...string) func() bool {
		return func() bool {
			var got []string
			for _, s := range m.Services("east") {
				got = append(got, s.GetName())
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		}
	}
	fedtest.Eventually(t, 10*time.Second, "west to import order, as the ServiceImport names", holds("order"))

	writeAtomically(t, imports, cartSidecarYAML)
	fedtest.Eventually(t, 10*time.Second, "west to import cart, as the Sidecar names, instead", holds("cart"))
	// A file that breaks keeps what it named while another file's
	// imports still come and go.
	writeAtomically(t, imports, strings.Replace(cartSidecarYAML, `"*/cart`, `"cart`, 1))
	writeAtomically(t, filepath.Join(dir, "more.yaml"), serviceImportYAML)
	fedtest.Eventually(t, 10*time.Second, "west to add order beside the broken file's cart", holds("cart", "order"))
	if err := os.Remove(filepath.Join(dir, "more.yaml")); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "west to drop order with its file", holds("cart"))
	writeAtomically(t, imports, cartSidecarYAML)

	// A VM of west whose sidecar calls payment.
	vmDir := t.TempDir()
	tm.WorkloadBootstrap(cp, "shop", "barista", "barista", vmDir)
	sidecar := `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: barista, namespace: shop}
spec:
  ingress:
  - port: {number: INBOUND, name: mtls}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:8080
  egress:
  - port: {number: 8080, name: http}
    bind: LOOPBACK
    hosts: ["*/payment.shop.svc.cluster.local"]
`
	// The egress listener has payment's port; a loopback address of its
	// own keeps it apart from other tests'.
	_, inbound, _ := net.SplitHostPort(testport.Addr(t))
	sidecar = strings.NewReplacer("INBOUND", inbound, "LOOPBACK", fmt.Sprintf("127.0.%d.%d", os.Getpid()%250+1, time.Now().Nanosecond()%250+1)).Replace(sidecar)
	if err := os.WriteFile(filepath.Join(vmDir, agent.SidecarFile), []byte(sidecar), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	a := agent.New(agent.Config{ConfigDir: vmDir, StateDir: t.TempDir(), Address: "127.0.0.1", Ready: func() { close(ready) }})
	stopAgent := fedtest.Start(t, a.Run, ready)
	t.Cleanup(stopAgent)
	fedtest.Eventually(t, 10*time.Second, "west to import payment for its VM too", holds("cart", "payment"))
	stopAgent()
	fedtest.Eventually(t, 15*time.Second, "west to drop payment once the VM's entry is gone", holds("cart"))
}

// A config directory whose imports do not parse stops the start, naming
// the file and the line: the imports it named are not known.
func TestControlPlaneRefusesBrokenImportFile(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("west")
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "imports.yaml"), "# imports\n"+strings.Replace(cartSidecarYAML, `"*/cart`, `"cart`, 1))
	cp, err := controlplane.New(controlplane.Config{Cluster: "west", Network: "net-west", DataDir: filepath.Join(tm.Dir, "west"),
		ConfigDir: dir, Source: fedtest.NewSource()})
	if err != nil {
		t.Fatal(err)
	}
	err = cp.Run(fedtest.DeadlineContext(t, 10*time.Second))
	if err == nil || !strings.Contains(err.Error(), "imports.yaml: document 1 (line 2): Sidecar shop/default: spec.egress[0].hosts[0]") {
		t.Fatalf("Run with a broken import file: %v", err)
	}
}

// startEastServingCoffee joins east and starts its control plane serving
// order (2 endpoints), cart (3) and payment (1).
func startEastServingCoffee(tm *fedtest.Mesh) {
	tm.Join("east")
	tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource(
		fedtest.CoffeeService("east", "order", 2, 18080), fedtest.CoffeeService("east", "cart", 3, 18080),
		fedtest.CoffeeService("east", "payment", 1, 18080))})
}
