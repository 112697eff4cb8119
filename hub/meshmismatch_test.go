package hub_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
)

// A hub started on a data directory with another --mesh than the one its
// CA was created for refuses to start, naming both, instead of serving a
// trust domain nobody can verify.
func TestHubRefusesAnotherMeshOnItsDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newHub := func(mesh string) *hub.Server {
		srv, err := hub.New(hub.Config{Mesh: mesh, Listen: "127.0.0.1:0", DataDir: dir, GossipProfile: "lan",
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	first := newHub("shop")
	fedtest.Start(t, first.Run, first.Ready())()

	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	err := newHub("other").Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "spiffe://shop") || !strings.Contains(err.Error(), `"other"`) || !strings.Contains(err.Error(), "--mesh") {
		t.Fatalf("hub with --mesh other on shop's data directory: %v, want an error naming both meshes and --mesh", err)
	}
}
