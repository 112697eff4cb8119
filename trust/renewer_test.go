package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestRenewerRenewsAtHalfLifeAndRetries(t *testing.T) {
	a, err := NewAuthority(eastTD, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(eastTD, "/ns/shop/sa/gateway")
	cred, err := a.IssueCredential(id, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := cred.Leaf()
	var calls, failures atomic.Int64
	renewed := make(chan *x509.Certificate, 16)
	r := &Renewer{
		Credential: cred,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			// The first attempt fails, as when the CA is briefly unreachable.
			if calls.Add(1) == 1 {
				failures.Add(1)
				return nil, errors.New("unreachable")
			}
			return a.IssueCSR(csr, id, 2*time.Second)
		},
		OnRenew: func(c *Credential) { renewed <- c.Leaf() },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var leaf *x509.Certificate
	select {
	case leaf = <-renewed:
	case <-ctx.Done():
		t.Fatal("no renewal within 20s")
	}
	if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 || !cred.Leaf().Equal(leaf) {
		t.Fatal("the credential was not replaced")
	}
	if failures.Load() != 1 {
		t.Errorf("failed attempts %d, want 1 before the retry", failures.Load())
	}
	// Renewal happened after half life and before expiry.
	if now := time.Now(); now.Before(RenewAt(first)) || now.After(first.NotAfter.Add(time.Second)) {
		t.Errorf("renewed at %s; half life %s, expiry %s", now, RenewAt(first), first.NotAfter)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestRenewerRefusesAnotherKeyOrID(t *testing.T) {
	a, _ := NewAuthority(eastTD, nil)
	id := spiffeid.RequireFromPath(eastTD, "/ns/shop/sa/gateway")
	cred, _ := a.IssueCredential(id, time.Hour)
	other, _ := a.IssueCredential(spiffeid.RequireFromPath(eastTD, "/other"), time.Hour)
	cases := map[string]SignFunc{
		"another key": func(context.Context, []byte) ([]*x509.Certificate, error) {
			s, _ := cred.GetX509SVID()
			return s.Certificates, nil
		},
		"another ID": func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
			return a.IssueCSR(csr, other.ID(), time.Hour)
		},
	}
	for name, sign := range cases {
		r := &Renewer{Credential: cred, Sign: sign}
		if err := r.renew(context.Background()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
