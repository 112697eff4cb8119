package trust

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

var eastTD = spiffeid.RequireTrustDomainFromString("east.shop")

func issue(t *testing.T, a *Authority, path string) *Credential {
	t.Helper()
	c, err := a.IssueCredential(spiffeid.RequireFromPath(a.TrustDomain(), path), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verifies reports whether cred verifies against a's current bundle at now.
func verifies(a *Authority, cred *Credential, now time.Time) error {
	s, _ := cred.GetX509SVID()
	_, _, err := x509svid.Verify(s.Certificates, a.Bundle().X509Bundle(), x509svid.WithTime(now))
	return err
}

func TestAuthorityIssuesWithinItsTrustDomain(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	a, err := NewAuthority(eastTD, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	cred := issue(t, a, "/ns/shop/sa/order")
	if err := verifies(a, cred, clock.t); err != nil {
		t.Fatalf("issued SVID does not verify: %v", err)
	}
	if got := cred.Expiry().Sub(clock.t); got > time.Hour || got < 59*time.Minute {
		t.Errorf("lifetime %s, want 1h", got)
	}
	_, err = a.IssueCredential(spiffeid.RequireFromString("spiffe://west.shop/ns/shop/sa/order"), time.Hour)
	if !errors.Is(err, ErrOutsideTrustDomain) {
		t.Errorf("foreign ID: err = %v, want ErrOutsideTrustDomain", err)
	}
	long, err := a.IssueCredential(spiffeid.RequireFromPath(eastTD, "/x"), 1000*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := long.Expiry().Sub(clock.t); got > MaxSVIDTTL {
		t.Errorf("lifetime %s exceeds the cap %s", got, MaxSVIDTTL)
	}
}

func TestAuthorityRotationOverlaps(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	a, err := NewAuthority(eastTD, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	a.SetMaxTTL(time.Hour)
	old := issue(t, a, "/ns/shop/sa/order")
	seq := func() uint64 { s, _ := a.Bundle().SequenceNumber(); return s }

	if err := a.SwitchSigning(); !errors.Is(err, ErrRotation) {
		t.Fatalf("switch before add: err = %v", err)
	}
	if err := a.AddRoot(); err != nil {
		t.Fatal(err)
	}
	if n := len(a.Bundle().X509Authorities()); n != 2 || seq() != 2 {
		t.Fatalf("after add: %d roots, sequence %d; want 2 and 2", n, seq())
	}
	// The old root still signs.
	if s, _ := issue(t, a, "/a").GetX509SVID(); string(s.Certificates[0].AuthorityKeyId) != string(old.Leaf().AuthorityKeyId) {
		t.Error("a new root signs before the switch")
	}
	if err := a.SwitchSigning(); err != nil {
		t.Fatal(err)
	}
	fresh := issue(t, a, "/ns/shop/sa/order")
	for name, c := range map[string]*Credential{"old": old, "new": fresh} {
		if err := verifies(a, c, clock.t); err != nil {
			t.Errorf("%s SVID does not verify during the overlap: %v", name, err)
		}
	}
	if err := a.DropOldRoots(); !errors.Is(err, ErrRotation) {
		t.Fatalf("drop before the old SVIDs expired: err = %v", err)
	}
	// A second rotation meanwhile is refused with when the first ends.
	dropAt := clock.t.Add(time.Hour).UTC().Format(time.RFC3339)
	if err := a.AddRoot(); !errors.Is(err, ErrRotation) || !strings.Contains(err.Error(), dropAt) || !strings.Contains(err.Error(), "stable") {
		t.Fatalf("rotation during a rotation: err = %v, want it to say the old root is dropped at %s", err, dropAt)
	}
	clock.advance(time.Hour + time.Second)
	if err := a.DropOldRoots(); err != nil {
		t.Fatal(err)
	}
	if n := len(a.Bundle().X509Authorities()); n != 1 || seq() != 3 {
		t.Fatalf("after drop: %d roots, sequence %d; want 1 and 3", n, seq())
	}
	fresh2 := issue(t, a, "/b")
	if err := verifies(a, fresh2, clock.t); err != nil {
		t.Errorf("SVID of the new root: %v", err)
	}
	if err := verifies(a, old, old.Leaf().NotBefore.Add(time.Minute)); err == nil {
		t.Error("an SVID of the dropped root still verifies")
	}

	// The state survives a restart.
	data, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadAuthority(eastTD, data, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Bundle().Equal(a.Bundle()) || b.Status().Phase != PhaseStable {
		t.Error("reloaded authority differs")
	}
}

func TestPluginAuthority(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	root, err := NewCA(eastTD, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		URIs: root.Cert.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(CACertFile, EncodeCertificates(inter))
	write(CAKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	write(RootCertFile, EncodeCertificates(root.Cert))
	write(CertChainFile, EncodeCertificates(inter, root.Cert))

	a, err := LoadPluginAuthority(eastTD, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred := issue(t, a, "/ns/shop/sa/order")
	if err := verifies(a, cred, time.Now()); err != nil {
		t.Fatalf("SVID from the plug-in CA does not verify against root-cert.pem: %v", err)
	}
	if err := a.AddRoot(); !errors.Is(err, ErrRotation) || !strings.Contains(err.Error(), CACertFile) {
		t.Errorf("rotating a plug-in CA: err = %v", err)
	}

	// A ca-cert.pem that does not chain to root-cert.pem is refused.
	other, _ := NewCA(eastTD, now)
	write(RootCertFile, EncodeCertificates(other.Cert))
	if _, err := LoadPluginAuthority(eastTD, dir, nil); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Errorf("mismatched root: err = %v", err)
	}
	os.Remove(filepath.Join(dir, CAKeyFile))
	if _, err := LoadPluginAuthority(eastTD, dir, nil); err == nil || !strings.Contains(err.Error(), CAKeyFile) {
		t.Errorf("missing key: err = %v", err)
	}
}

func TestBundleSetSequenceRules(t *testing.T) {
	a, err := NewAuthority(eastTD, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := NewBundleSet()
	if _, err := set.GetX509BundleForTrustDomain(eastTD); !errors.Is(err, ErrNotFederated) {
		t.Fatalf("empty set: err = %v", err)
	}
	v1 := a.Bundle()
	if changed, err := set.Update(v1); !changed || err != nil {
		t.Fatalf("first update: %v %v", changed, err)
	}
	if changed, err := set.Update(v1.Clone()); changed || err != nil {
		t.Fatalf("equal update: %v %v", changed, err)
	}
	if err := a.AddRoot(); err != nil {
		t.Fatal(err)
	}
	v2 := a.Bundle()
	if changed, err := set.Update(v2); !changed || err != nil {
		t.Fatalf("newer update: %v %v", changed, err)
	}
	if _, err := set.Update(v1); !errors.Is(err, ErrSequenceRegression) {
		t.Fatalf("older bundle: err = %v", err)
	}
	forged := v1.Clone()
	forged.SetSequenceNumber(2)
	if _, err := set.Update(forged); !errors.Is(err, ErrSequenceRegression) {
		t.Fatalf("same sequence, other content: err = %v", err)
	}
	if seq, _ := set.Sequence(eastTD); seq != 2 {
		t.Errorf("sequence %d after refused updates, want 2", seq)
	}
}

func TestParseBundleRejectsBadInput(t *testing.T) {
	a, _ := NewAuthority(eastTD, nil)
	good, err := a.Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseBundle(eastTD, good); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	noSeq := a.Bundle()
	noSeq.ClearSequenceNumber()
	noSeqJSON, _ := noSeq.Marshal()
	cases := map[string][]byte{
		"not json":    []byte("{"),
		"no keys":     []byte(`{"spiffe_sequence":1}`),
		"no sequence": noSeqJSON,
		"too large":   []byte(strings.Repeat(" ", MaxBundleBytes+1)),
	}
	for name, data := range cases {
		if _, err := ParseBundle(eastTD, data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseBundle(f *testing.F) {
	a, _ := NewAuthority(eastTD, nil)
	good, _ := a.Bundle().Marshal()
	f.Add(good)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}],"spiffe_sequence":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(eastTD, data)
		if err != nil {
			return
		}
		out, err := b.Marshal()
		if err != nil {
			t.Fatalf("accepted bundle does not re-encode: %v", err)
		}
		again, err := ParseBundle(eastTD, out)
		if err != nil || !again.Equal(b) {
			t.Fatalf("re-encoded bundle differs: %v", err)
		}
	})
}
