package hub_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
)

// An operator's admin credential issued from the shared CA file works on
// every replica; one from another CA, or expired, works on none; a wrong
// mesh or a missing CA file is an error that says what to do.
func TestHAAdminCredentialFromCAFile(t *testing.T) {
	t.Parallel()
	h := newHAMesh(t, 2)
	now := time.Now()
	ops := t.TempDir()
	expiry, err := hub.WriteAdminCredential("shop", h.CAFile, ops, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if d := expiry.Sub(now); d < 59*time.Minute || d > time.Hour+time.Minute {
		t.Errorf("credential valid for %s, want an hour", d)
	}
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if _, err := hub.CreateCAFile("shop", otherCA, now); err != nil {
		t.Fatal(err)
	}
	foreign, expired := t.TempDir(), t.TempDir()
	if _, err := hub.WriteAdminCredential("shop", otherCA, foreign, time.Hour, now); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.WriteAdminCredential("shop", h.CAFile, expired, time.Hour, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := range h.Replicas {
		if err := createToken(t, h.Addr(i), ops, filepath.Join(ops, membership.CAFile)); err != nil {
			t.Errorf("replica %d refused the admin credential from the CA file: %v", i, err)
		}
		// The foreign credential is checked against the mesh's CA, as a
		// caller that trusts the right hub but holds the wrong key.
		for name, dir := range map[string]string{"another CA's": foreign, "an expired": expired} {
			if err := createToken(t, h.Addr(i), dir, filepath.Join(ops, membership.CAFile)); err == nil {
				t.Errorf("replica %d accepted %s admin credential", i, name)
			}
		}
	}

	for _, tc := range []struct{ mesh, caFile, want string }{
		{"north", h.CAFile, "north"},
		{"shop", filepath.Join(t.TempDir(), "none.pem"), "federate hub create-ca"},
		{"Not A Domain", h.CAFile, "not a valid trust domain"},
	} {
		_, err := hub.WriteAdminCredential(tc.mesh, tc.caFile, t.TempDir(), time.Hour, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mesh %q, CA file %s: %v, want an error naming %q", tc.mesh, tc.caFile, err, tc.want)
		}
	}
}

// createToken asks the hub at addr for a join token with the admin
// credential in dir, trusting caFile.
func createToken(t *testing.T, addr, dir, caFile string) error {
	t.Helper()
	conn, err := membership.Dial(addr, filepath.Join(dir, hub.AdminCredFile), caFile)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := fedtest.DeadlineContext(t, 10*time.Second)
	_, err = hubpb.NewHubClient(conn).CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "north"})
	return err
}
