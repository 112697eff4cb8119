package file

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/federate/federate/registry/registrypb"
)

// A file removed between the listing and its reading is gone, not an
// error: ReadDir under a stream of deletes always succeeds, with fewer
// files each time.
func TestReadDirFilesRemovedWhileReading(t *testing.T) {
	dir := t.TempDir()
	const n = 300
	files := make(map[string]string, n)
	for i := range n {
		files[fmt.Sprintf("svc-%03d.yaml", i)] = serviceEntry(fmt.Sprintf("svc-%03d", i))
	}
	writeFiles(t, dir, files)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for i := range n {
			if err := os.Remove(filepath.Join(dir, fmt.Sprintf("svc-%03d.yaml", i))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	reads := 0
	for left := n; left > 0; reads++ {
		got, err := ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir while files are removed: %v", err)
		}
		if len(got) > left {
			t.Fatalf("ReadDir returned %d files after it had returned %d", len(got), left)
		}
		left = len(got)
	}
	t.Logf("%d reads while %d files were removed", reads, n)
}

// Each file keeps its last good documents while it is empty or broken,
// whatever the others do; it is logged once per problem; a removed file is
// gone; a file broken from the start is left out and reported.
func TestDirKeepsLastGoodDocumentsPerFile(t *testing.T) {
	dir := t.TempDir()
	order := filepath.Join(dir, "order.yaml")
	writeFiles(t, dir, map[string]string{"order.yaml": exampleYAML, "ledger.yaml": privateYAML})
	logs := make(chan slog.Record, 100)
	d := NewDir(dir, slog.New(recordHandler{records: logs}))
	parse := func(what string) []string {
		t.Helper()
		docs, err := d.Parse()
		if err != nil {
			t.Fatalf("%s: Parse: %v", what, err)
		}
		var refs []string
		for _, doc := range docs {
			refs = append(refs, filepath.Base(doc.File)+":"+doc.ref())
		}
		return refs
	}
	want := func(what string, got []string, want ...string) {
		t.Helper()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: documents in force (-want +got):\n%s", what, diff)
		}
	}
	warned := func(what, file, reason string) {
		t.Helper()
		var found []string
		for {
			select {
			case r := <-logs:
				var f, e string
				r.Attrs(func(a slog.Attr) bool {
					switch a.Key {
					case "file":
						f = a.Value.String()
					case "error":
						e = a.Value.String()
					}
					return true
				})
				if r.Level == slog.LevelWarn {
					found = append(found, f+": "+e)
				}
				continue
			default:
			}
			break
		}
		if reason == "" {
			if len(found) > 0 {
				t.Errorf("%s: logged %q, want nothing", what, found)
			}
			return
		}
		if len(found) != 1 || !strings.HasPrefix(found[0], file+": ") || !strings.Contains(found[0], reason) {
			t.Errorf("%s: logged %q, want one warning for %s saying %q", what, found, file, reason)
		}
	}
	all := []string{"ledger.yaml:ServiceEntry shop/ledger", "order.yaml:ServiceExport shop/order", "order.yaml:ServiceEntry shop/order", "order.yaml:WorkloadEntry shop/order-1", "order.yaml:WorkloadEntry shop/order-2"}
	want("first read", parse("first read"), all...)

	// Rewritten in place: truncated first. Its documents stay, and the
	// empty file is reported once however often it is read.
	if err := os.Truncate(order, 0); err != nil {
		t.Fatal(err)
	}
	want("order.yaml empty", parse("order.yaml empty"), all...)
	warned("order.yaml empty", order, "the file is empty")
	if d.Problems() == nil || d.Broken() != nil {
		t.Errorf("order.yaml empty: Problems() = %v, Broken() = %v; want the emptied file a problem, not broken", d.Problems(), d.Broken())
	}
	want("order.yaml still empty", parse("order.yaml still empty"), all...)
	warned("order.yaml still empty", order, "")

	// Half written: broken YAML is another problem, reported once too.
	half := exampleYAML[:strings.Index(exampleYAML, "workloadSelector:")+28]
	if err := os.WriteFile(order, []byte(half), 0o600); err != nil {
		t.Fatal(err)
	}
	want("order.yaml half written", parse("order.yaml half written"), all...)
	warned("order.yaml half written", order, "document 2")
	if err := d.Broken(); err == nil || !strings.Contains(err.Error(), order) {
		t.Errorf("order.yaml half written: Broken() = %v, want order.yaml's", err)
	}
	if err := d.Problems(); err == nil || !strings.Contains(err.Error(), order) {
		t.Errorf("Problems() = %v, want order.yaml's", err)
	}

	// Meanwhile the other file changes, and that is taken: last good is per
	// file, not the directory's.
	writeFiles(t, dir, map[string]string{"ledger.yaml": strings.Replace(privateYAML, "name: ledger", "name: books", 1)})
	withBooks := []string{"ledger.yaml:ServiceEntry shop/books", "order.yaml:ServiceExport shop/order", "order.yaml:ServiceEntry shop/order", "order.yaml:WorkloadEntry shop/order-1", "order.yaml:WorkloadEntry shop/order-2"}
	want("ledger.yaml changed", parse("ledger.yaml changed"), withBooks...)

	// Written whole: its new documents are in force.
	moved := strings.Replace(exampleYAML, "name: order-2", "name: order-3", 1)
	if err := os.WriteFile(order, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	want("order.yaml written", parse("order.yaml written"), "ledger.yaml:ServiceEntry shop/books", "order.yaml:ServiceExport shop/order", "order.yaml:ServiceEntry shop/order", "order.yaml:WorkloadEntry shop/order-1", "order.yaml:WorkloadEntry shop/order-3")
	warned("order.yaml written", "", "")
	if err := d.Problems(); err != nil {
		t.Errorf("Problems() = %v after every file parsed", err)
	}

	// Broken, then removed: removal withdraws it, last good or not.
	if err := os.WriteFile(order, []byte("kind: Service\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse("order.yaml broken")
	warned("order.yaml broken", order, `unknown kind "Service"`)
	if err := os.Remove(order); err != nil {
		t.Fatal(err)
	}
	want("order.yaml removed", parse("order.yaml removed"), "ledger.yaml:ServiceEntry shop/books")

	// A new file broken from the start has no last good documents: it is
	// left out, and reported. An empty new file is just empty.
	writeFiles(t, dir, map[string]string{"new.yaml": "kind: Gateway\n", "empty.yaml": ""})
	want("new.yaml broken", parse("new.yaml broken"), "ledger.yaml:ServiceEntry shop/books")
	warned("new.yaml broken", filepath.Join(dir, "new.yaml"), "unknown kind")
	if err := d.Problems(); err == nil || !strings.Contains(err.Error(), "new.yaml") || strings.Contains(err.Error(), "empty.yaml") {
		t.Errorf("Problems() = %v, want new.yaml's only", err)
	}
}

// A service file rewritten in place, truncated and then written, never
// withdraws its service: the source reports no set while the file is
// empty, and the new content once it is written.
func TestRunRewriteInPlaceKeepsTheService(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"order.yaml": exampleYAML, "ledger.yaml": privateYAML + ledgerExport})
	r := startRun(t, testConfig(dir))
	first := receive(t, r.updates, "the first set")
	if len(first) != 2 {
		t.Fatalf("first set has %d services, want 2", len(first))
	}
	path := filepath.Join(dir, "order.yaml")
	for i := range 5 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The source reads the empty file: it says so.
		for {
			rec := receive(t, r.logs, "the empty file to be logged")
			if rec.Level == slog.LevelWarn && strings.Contains(rec.Message, "last good documents stay in force") {
				break
			}
		}
		addr := fmt.Sprintf("127.0.0.%d", 20+i)
		if _, err := f.WriteString(strings.Replace(exampleYAML, "address: 127.0.0.2", "address: "+addr, 1)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		want := []*registrypb.Service{first[0], orderService()}
		want[1].Endpoints[1].Address = addr
		got := receive(t, r.updates, "the rewritten set")
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Fatalf("rewrite %d: set (-want +got):\n%s", i, diff)
		}
	}
}
