package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
)

// A data directory join cannot write is refused before the hub sees the
// token, so the same token then joins into a good directory.
func TestJoinChecksDataDirBeforeUsingToken(t *testing.T) {
	t.Parallel()
	h := startHubProcess(t)
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	out, err := h.federate(ctx, "token", "create", "--cluster", "north")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Fields(out)[0]

	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr lockedBuffer
	err = run(ctx, []string{"join", "--token", token, "--data-dir", filepath.Join(notDir, "data")}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--data-dir") || !strings.Contains(err.Error(), "the token is not used yet") {
		t.Fatalf("join into a directory it cannot create: %v, want an error naming --data-dir that says the token is not used", err)
	}
	dir := t.TempDir()
	if err := run(ctx, []string{"join", "--token", token, "--data-dir", dir}, &stdout, &stderr); err != nil {
		t.Fatalf("join with the same token into a good directory: %v", err)
	}
	if _, err := membership.LoadMembership(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("data directory holds %d files after join, want 3 (no leftover check file)", len(entries))
	}
}
