package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/federate/federate/trust"
)

// Each file is replaced by a rename (a reader holding the old one keeps
// it whole) and only when its content changes; an empty root set is an
// error, never an empty file.
func TestSVIDFilesAreReplacedWhole(t *testing.T) {
	d := newDomain(t, "east.shop")
	files := SVIDFiles{Dir: t.TempDir()}
	cred := d.cred(t, "/ns/shop/sa/client")
	if err := files.WriteSVID(cred); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(files.Dir, SVIDPEMFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds the key", SVIDPEMFile, before.Mode().Perm())
	}
	if err := files.WriteSVID(cred); err != nil {
		t.Fatal(err)
	}
	same, _ := os.Stat(path)
	if !os.SameFile(before, same) {
		t.Error("an unchanged SVID was rewritten")
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := files.WriteSVID(d.cred(t, "/ns/shop/sa/client")); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if os.SameFile(before, after) {
		t.Error("a renewed SVID was written in place, not renamed into place")
	}
	if got, err := trust.LoadCredential(path); err != nil || got.ID() != cred.ID() {
		t.Fatalf("the renewed file: %v, %v", got, err)
	}
	if err := files.WriteBundle(nil); err == nil || !strings.Contains(err.Error(), "no roots") {
		t.Errorf("empty bundle: err = %v, want a refusal", err)
	}
	if err := files.WriteBundle(d.auth.Bundle().X509Authorities()); err != nil {
		t.Fatal(err)
	}
	if roots, err := trust.LoadCertificates(filepath.Join(files.Dir, BundleFile)); err != nil || len(roots) == 0 {
		t.Fatalf("bundle: %v, %v", roots, err)
	}
}
