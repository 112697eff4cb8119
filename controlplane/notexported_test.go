package controlplane_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
)

// An Istio-valid ServiceEntry without its ServiceExport is not exported,
// and the control plane's status says so, naming it and its file; once a
// ServiceExport is written the service is published and the warning goes.
func TestIntegrationStatusShowsServiceEntriesNotExported(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	t.Cleanup(tm.StopMembers)
	dir := t.TempDir()
	writeFile(t, dir, "order.yaml", serviceYAML("order", 0))
	// ledger is Istio-valid but has no ServiceExport.
	ledger := strings.Replace(serviceYAML("ledger", 0), "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: ledger, namespace: shop}\n---\n", "# not exported yet\n", 1)
	if ledger == serviceYAML("ledger", 0) {
		t.Fatal("serviceYAML no longer starts with its ServiceExport")
	}
	writeFile(t, dir, "ledger.yaml", ledger)
	tm.Join("east")
	cp := tm.StartControlPlane("east", controlplane.Config{ConfigDir: dir, ConfigInterval: configPoll})
	m := cp.Member()
	warning := func() string {
		for _, w := range m.StatusNow().GetPolicyWarnings() {
			if w.GetField() == "ServiceEntry shop/ledger" {
				return fmt.Sprintf("(%s) %s: %s", w.GetHost(), w.GetField(), w.GetMessage())
			}
		}
		return ""
	}
	fedtest.Eventually(t, 10*time.Second, "east to publish order", func() bool { return len(m.Services("east")) == 1 })
	fedtest.Eventually(t, 10*time.Second, "the not-exported warning in east's status", func() bool { return warning() != "" })
	want := "(ledger.shop.svc.cluster.local) ServiceEntry shop/ledger: not exported: no ServiceExport of the same name and namespace: write one to export it (" +
		filepath.Join(dir, "ledger.yaml") + " line 2)"
	if got := warning(); got != want {
		t.Errorf("status warning\n got %s\nwant %s", got, want)
	}

	tmp := filepath.Join(dir, ".ledger.yaml")
	writeFile(t, dir, ".ledger.yaml", serviceYAML("ledger", 0))
	if err := os.Rename(tmp, filepath.Join(dir, "ledger.yaml")); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "east to publish ledger once exported", func() bool { return len(m.Services("east")) == 2 })
	fedtest.Eventually(t, 10*time.Second, "the warning to go", func() bool { return warning() == "" })
}
