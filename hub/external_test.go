package hub_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
)

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The hub and each control plane report every imported trust domain:
// sequence, roots, last and next refresh, no error. A bootstrap bundle
// that differs from the first fetch only by its refresh hint (as the one
// 'spire-server bundle show' prints differs from what SPIRE's endpoint
// serves) is no refusal and logs no warning, and external-bundle log lines
// name the trust domain once.
func TestIntegrationExternalTrustDomainStatus(t *testing.T) {
	t.Parallel()
	partner := fedtest.NewPartner(t, "partner.example")
	ext := partner.External()
	ext.Bundle = ext.Bundle.Clone()
	ext.Bundle.SetRefreshHint(5 * time.Minute)
	ext.MaxRefresh = time.Second
	logs := &lockedBuffer{}
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) {
		c.External = []hub.ExternalTrustDomain{ext}
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	east := tm.AddCluster("east").Member
	west := tm.AddCluster("west").Member
	held := func() (uint64, uint64) {
		e, _ := east.Bundles().Sequence(partner.TD)
		w, _ := west.Bundles().Sequence(partner.TD)
		return e, w
	}
	fedtest.Eventually(t, 10*time.Second, "the partner bundle at east and west", func() bool {
		e, w := held()
		return e == 1 && w == 1
	})
	partner.AddRoot()
	fedtest.Eventually(t, 10*time.Second, "the partner's new root at east and west", func() bool {
		e, w := held()
		return e == 2 && w == 2
	})

	st, err := tm.AdminRegistry().Status(fedtest.DeadlineContext(t, 10*time.Second), &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if len(st.GetExternal()) != 1 {
		t.Fatalf("hub status lists %d imported trust domains, want 1: %v", len(st.GetExternal()), st.GetExternal())
	}
	h := st.GetExternal()[0]
	if h.GetTrustDomain() != "partner.example" || h.GetUrl() != partner.URL || h.GetBundleSequence() != 2 || h.GetRoots() != 2 || h.GetError() != "" {
		t.Errorf("hub status of the partner: %v", h)
	}
	// Polled every second (refresh=1s): the last refresh is recent, the next one due within a second.
	if last := time.Unix(h.GetLastRefresh(), 0); now.Sub(last) > 3*time.Second {
		t.Errorf("hub's last refresh %s, %s ago; want within 3s", last, now.Sub(last))
	}
	if next := time.Unix(h.GetNextRefresh(), 0); next.Before(now.Add(-2*time.Second)) || next.After(now.Add(2*time.Second)) {
		t.Errorf("hub's next refresh %s, want within 2s of now (%s)", next, now)
	}
	cp := east.StatusNow().GetExternal()
	if len(cp) != 1 || cp[0].GetTrustDomain() != "partner.example" || cp[0].GetBundleSequence() != 2 || cp[0].GetRoots() != 2 ||
		cp[0].GetLastRefresh() == 0 || cp[0].GetError() != "" {
		t.Errorf("east's status of the partner: %v", cp)
	}

	out := logs.String()
	if strings.Contains(out, "refused") {
		t.Errorf("the hub refused a partner bundle:\n%s", out)
	}
	imported := 0
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "external bundle") {
			continue
		}
		imported++
		if n := strings.Count(line, "trust_domain="); n != 1 {
			t.Errorf("log line names the trust domain %d times: %s", n, line)
		}
	}
	if imported < 2 {
		t.Errorf("the hub logged %d external bundle imports, want 2:\n%s", imported, out)
	}
}
