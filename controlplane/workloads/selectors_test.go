package workloads

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The selectors come from the config directory as the file source reads
// it: a broken file keeps the last good selectors and is logged once, not
// dropped silently.
func TestSelectorsKeepLastGoodAndLogOnce(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	w := &Server{cfg: Config{ConfigDir: dir}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	write("cart.yaml", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: cart, namespace: shop}\n"+
		"spec: {hosts: [cart.shop.internal], ports: [{number: 80, name: http, targetPort: 8080}, {number: 81, name: admin}], workloadSelector: {labels: {app: cart}}}\n")
	want := func(when string) {
		t.Helper()
		sel := w.selectors()["cart.shop.internal"]
		if got := sel.Labels["app"]; got != "cart" {
			t.Fatalf("%s: selector of cart.shop.internal is app=%q, want app=cart", when, got)
		}
		if len(sel.TargetPorts) != 1 || sel.TargetPorts["http"] != 8080 {
			t.Fatalf("%s: target ports of cart.shop.internal %v, want http at 8080", when, sel.TargetPorts)
		}
	}
	want("good files")

	write("broken.yaml", "kind: Gateway\n")
	want("with a broken file")
	want("with a broken file, read again")
	broken := filepath.Join(dir, "broken.yaml")
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), broken) {
		t.Fatalf("want one warning naming %s, got:\n%s", broken, logs.String())
	}

	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	want("after the fix")
	if !strings.Contains(logs.String(), "read again") {
		t.Errorf("no log that the selectors read again:\n%s", logs.String())
	}
	if w.selectors() == nil || (&Server{}).selectors() != nil {
		t.Error("want selectors only with a config directory")
	}
}
