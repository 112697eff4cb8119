package controlplane_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
)

// Sizes and pace of the config directory churn.
const (
	churnFiles    = 1000
	churnRewrites = 1000
	deleteEvery   = 2 * time.Millisecond // 1,000 deletes over about 2 s
	configPoll    = 20 * time.Millisecond
	finalStateIn  = 10 * time.Second // logged: about 1 s on an idle machine
)

// stableServices stay in the config directory for the whole run: none of
// them may ever be withdrawn at a peer.
var stableServices = []string{"order", "payment", "inventory", "ledger", "shipping"}

// TestIntegrationConfigDirChurn deletes 1,000 service files from a real
// control plane's config directory while it reads it, then rewrites its
// other files in place (truncate, then write) 1,000 times, each time
// waiting until the control plane has read the empty file. Peers watch
// every record they apply: no service whose file still exists is ever
// withdrawn, changes keep flowing while the deletes run, and after each
// phase the final state reaches every peer (logged: about 1 s when idle).
func TestIntegrationConfigDirChurn(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	t.Cleanup(tm.StopMembers)
	dir := t.TempDir()
	for i := range churnFiles {
		writeFile(t, dir, fmt.Sprintf("churn-%04d.yaml", i), serviceYAML(fmt.Sprintf("churn-%04d", i), i))
	}
	for _, name := range stableServices {
		writeFile(t, dir, name+".yaml", serviceYAML(name, 0))
	}

	var peers []*peerWatch
	for _, name := range []string{"west", "central"} {
		tm.Join(name)
		w := &peerWatch{name: name}
		w.m = tm.StartMemberWith(name, func(c *member.Config) { c.OnApply = w.applied }).Member
		peers = append(peers, w)
	}
	tm.Join("east")
	emptied := make(chan string, 64)
	var loadFailures atomic.Int64
	tm.StartControlPlane("east", controlplane.Config{
		ConfigDir: dir, ConfigInterval: configPoll,
		Logger: slog.New(configLog{Handler: tm.Logger().Handler(), emptied: emptied, loadFailures: &loadFailures}).With("node", "east"),
	})
	// Set-up, not the property under test: 1,005 files decoded and
	// published take long on a busy machine with the race detector.
	everywhere(t, peers, 2*time.Minute, "every file's service at every peer", func(w *peerWatch) bool {
		return len(w.m.Services("east")) == churnFiles+len(stableServices)
	})

	// Deletes, paced so that they span many reads of the directory, in no
	// order, so that a file goes while a read that listed it is under way.
	pace := time.NewTicker(deleteEvery)
	for _, i := range rand.Perm(churnFiles) {
		<-pace.C
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("churn-%04d.yaml", i))); err != nil {
			t.Fatal(err)
		}
	}
	pace.Stop()
	deletesDone := time.Now()
	if n := loadFailures.Load(); n > 0 {
		t.Errorf("the control plane failed to load its config directory %d times while files were deleted, want every read to succeed", n)
	}
	for _, w := range peers {
		steps := w.churnSteps()
		t.Logf("%s saw east's file services fall in %d steps while the files were deleted", w.name, steps)
		if steps == 0 {
			t.Errorf("%s saw none of east's file services go while 1,000 files were deleted over %s, want it to follow the deletes", w.name, churnFiles*deleteEvery)
		}
	}
	everywhere(t, peers, finalStateIn, "the deletes' final state at every peer", func(w *peerWatch) bool {
		return hasStable(w.m, 0) && len(w.m.Services("east")) == len(stableServices)
	})
	t.Logf("after %d deletes the final state was at every peer %s after the last", churnFiles, time.Since(deletesDone).Round(time.Millisecond))

	// In-place rewrites, each seen empty by the control plane.
	wait := time.NewTimer(0)
	defer wait.Stop()
	for i := 1; i <= churnRewrites; i++ {
		name := stableServices[i%len(stableServices)]
		path := filepath.Join(dir, name+".yaml")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		wait.Reset(10 * time.Second)
		for seen := ""; seen != path; {
			select {
			case seen = <-emptied:
			case <-wait.C:
				t.Fatalf("rewrite %d: the control plane did not report %s empty within 10s", i, path)
			}
		}
		// The content changes with i, so that every rewrite is published.
		_, err = f.WriteString(serviceYAML(name, i))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	rewritesDone := time.Now()
	everywhere(t, peers, finalStateIn, "the rewrites' final state at every peer", func(w *peerWatch) bool {
		return hasStable(w.m, churnRewrites)
	})
	t.Logf("after %d in-place rewrites the final state was at every peer %s after the last", churnRewrites, time.Since(rewritesDone).Round(time.Millisecond))
	for _, w := range peers {
		if withdrawn := w.withdrawals(); len(withdrawn) > 0 {
			t.Errorf("%s had services withdrawn whose files existed: %s", w.name, strings.Join(withdrawn, "; "))
		}
	}
}

// serviceYAML is an exported ServiceEntry with two endpoints; the second
// one's address tells the generation of the content.
func serviceYAML(name string, generation int) string {
	return fmt.Sprintf(`apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: %[1]s, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: shop}
spec:
  hosts: [%[1]s.shop.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.10.0.1, serviceAccount: %[1]s}
  - {address: %[2]s, serviceAccount: %[1]s}
`, name, generationAddress(generation))
}

func generationAddress(generation int) string {
	return fmt.Sprintf("10.20.%d.%d", generation/250, generation%250+1)
}

// hasStable reports whether m holds every stable service of east in the
// generation its file has after the rewrites up to last: rewrite i writes
// generation i of stableServices[i%5].
func hasStable(m *member.Member, last int) bool {
	svcs := m.Services("east")
	for k, name := range stableServices {
		gen := 0
		if last > 0 {
			gen = max(last-(last-k)%len(stableServices), 0)
		}
		i := slices.IndexFunc(svcs, func(s *registry.Service) bool { return s.GetName() == name })
		if i < 0 || len(svcs[i].GetEndpoints()) != 2 || svcs[i].GetEndpoints()[1].GetAddress() != generationAddress(gen) {
			return false
		}
	}
	return true
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// everywhere waits until cond holds for every peer.
func everywhere(t *testing.T, peers []*peerWatch, timeout time.Duration, what string, cond func(*peerWatch) bool) {
	t.Helper()
	fedtest.Eventually(t, timeout, what, func() bool {
		for _, w := range peers {
			if !cond(w) {
				return false
			}
		}
		return true
	})
}

// peerWatch sees every record a peer applies of east's slice.
type peerWatch struct {
	name string
	m    *member.Member

	mu        sync.Mutex      // guards the fields below
	withdrawn []string        // stable services withdrawn, with their versions
	churn     map[string]bool // the deleted files' services the peer holds
	steps     map[int]bool    // how many of those it held after each withdrawal
}

// applied is the peer's OnApply: it must not call back into the member.
func (w *peerWatch) applied(recs []*registry.Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.churn == nil {
		w.churn, w.steps = make(map[string]bool), make(map[int]bool)
	}
	withdrew := false
	for _, r := range recs {
		if r.GetCluster() != "east" {
			continue
		}
		name := strings.TrimSuffix(r.GetKey(), ".shop.svc.cluster.local")
		gone := r.GetDeleted() || len(r.GetService().GetEndpoints()) == 0
		switch {
		case slices.Contains(stableServices, name) && gone:
			w.withdrawn = append(w.withdrawn, fmt.Sprintf("%s at version %s", name, registry.FormatVersion(r.GetVersion())))
		case strings.HasPrefix(name, "churn-") && gone:
			delete(w.churn, name)
			withdrew = true
		case strings.HasPrefix(name, "churn-"):
			w.churn[name] = true
		}
	}
	if withdrew {
		w.steps[len(w.churn)] = true
	}
}

// churnSteps counts the distinct numbers of the deleted files' services the
// peer held after it withdrew some.
func (w *peerWatch) churnSteps() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.steps)
}

func (w *peerWatch) withdrawals() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.withdrawn)
}

// configLog passes the control plane's log on, but reports the files it
// says it read empty instead of printing each of those warnings, and
// counts its failures to load the config directory.
type configLog struct {
	slog.Handler
	emptied      chan<- string
	loadFailures *atomic.Int64
}

func (h configLog) Handle(ctx context.Context, r slog.Record) error {
	var file string
	empty := false
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "file":
			file = a.Value.String()
		case "error":
			empty = strings.Contains(a.Value.String(), "the file is empty")
		}
		return true
	})
	if strings.Contains(r.Message, "cannot load service files") {
		h.loadFailures.Add(1)
	}
	if !empty || file == "" {
		return h.Handler.Handle(ctx, r)
	}
	select {
	case h.emptied <- file:
	default: // the test waits for one file at a time
	}
	return nil
}

func (h configLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return configLog{Handler: h.Handler.WithAttrs(attrs), emptied: h.emptied, loadFailures: h.loadFailures}
}

func (h configLog) WithGroup(name string) slog.Handler {
	return configLog{Handler: h.Handler.WithGroup(name), emptied: h.emptied, loadFailures: h.loadFailures}
}
