package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
)

// 'federate cluster remove' removes a cluster that joined but never
// published, says what it revoked, and the cluster's credential is refused
// from then on.
func TestClusterRemoveSaysWhatItRevoked(t *testing.T) {
	t.Parallel()
	h := startHubProcess(t)
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	token, err := h.federate(ctx, "token", "create", "--cluster", "north")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := run(ctx, []string{"join", "--token", strings.Fields(token)[0], "--data-dir", dir}, &lockedBuffer{}, &lockedBuffer{}); err != nil {
		t.Fatal(err)
	}
	ms, err := membership.LoadMembership(dir)
	if err != nil {
		t.Fatal(err)
	}
	asNorth := []string{"status", "--hub", h.Addr, "--credential", filepath.Join(dir, membership.CredentialFile)}
	if err := run(ctx, asNorth, &lockedBuffer{}, &lockedBuffer{}); err != nil {
		t.Fatalf("north's status before its removal: %v", err)
	}

	out, err := h.federate(ctx, "cluster", "remove", "north")
	if err != nil {
		t.Fatalf("removing a cluster that joined but never published: %v", err)
	}
	for _, want := range []string{
		`Cluster "north" removed at `,
		"services withdrawn everywhere: 0",
		"unexpired ones the hub issued: 1",
		fmt.Sprintf("serial %X", ms.Credential.Leaf().SerialNumber),
		"unused join tokens revoked: 0",
		"hub streams closed: 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("'cluster remove' output lacks %q:\n%s", want, out)
		}
	}
	err = run(ctx, asNorth, &lockedBuffer{}, &lockedBuffer{})
	if err == nil || !strings.Contains(err.Error(), "removed from the federation") {
		t.Errorf("north's status after its removal: %v, want a refusal naming the removal", err)
	}
	if _, err := h.federate(ctx, "cluster", "remove", "north"); err == nil || !strings.Contains(err.Error(), "federate status") {
		t.Errorf("removing north twice: %v, want not found, pointing at 'federate status'", err)
	}
}
