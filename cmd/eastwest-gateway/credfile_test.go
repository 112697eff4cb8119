package main

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/trust"
)

// Renewals are written to a writable credential file; once the file turns
// out read-only (the error a read-only Secret mount gives) that is logged
// once at info, never as an error, and later renewals stay in memory. A
// newer credential written into the file (kubelet updating the Secret) is
// taken up by the credential in use; an older or broken one is not.
func TestCredentialFileFollowsReadOnlySecret(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("east.shop")
	ca, err := trust.NewAuthority(td, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/ns/istio-system/sa/eastwest-gateway")
	issue := func(ttl time.Duration) *trust.Credential {
		t.Helper()
		c, err := ca.IssueCredential(id, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pemOf := func(c *trust.Credential) []byte {
		t.Helper()
		data, err := c.MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	path := filepath.Join(t.TempDir(), "gateway.pem")
	inUse := issue(time.Hour)
	if err := inUse.Save(path); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	f := newCredentialFile(path, inUse, slog.New(slog.NewTextHandler(&logs, nil)))

	renewed := issue(time.Hour)
	f.saveRenewal(renewed)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, pemOf(renewed)) {
		t.Fatal("a renewal was not written to a writable credential file")
	}

	readOnly := &fs.PathError{Op: "open", Path: path + ".tmp", Err: syscall.EROFS}
	f.saveFailed(readOnly)
	f.saveRenewal(issue(time.Hour))
	f.saveRenewal(issue(time.Hour))
	if got, _ := os.ReadFile(path); !bytes.Equal(got, pemOf(renewed)) {
		t.Error("renewals were written after the file turned out read-only")
	}
	if n := strings.Count(logs.String(), "read-only"); n != 1 || !strings.Contains(logs.String(), "level=INFO") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("want one info line about the read-only file and no error, got:\n%s", logs.String())
	}

	newer := issue(3 * time.Hour)
	if err := os.WriteFile(path, pemOf(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	f.reload()
	if inUse.Leaf().SerialNumber.Cmp(newer.Leaf().SerialNumber) != 0 {
		t.Fatal("the newer credential written into the file was not taken up")
	}
	for what, data := range map[string][]byte{"an older credential": pemOf(issue(30 * time.Minute)), "a broken file": []byte("not PEM")} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f.reload()
		if inUse.Leaf().SerialNumber.Cmp(newer.Leaf().SerialNumber) != 0 {
			t.Errorf("%s in the file replaced the credential in use", what)
		}
	}
}
