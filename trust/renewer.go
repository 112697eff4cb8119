package trust

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/federate/federate/internal/retry"
)

// SignFunc trades a certificate request for a chain, leaf first. Callers
// adapt it to their CA: the control plane's CSR API, for example.
type SignFunc func(ctx context.Context, csr []byte) ([]*x509.Certificate, error)

// Renewer keeps a Credential current: it renews at half of the issued
// lifetime (see RenewAt) with a fresh key, and retries with backoff while
// the CA is unreachable. TLS configurations built on the Credential pick up
// each renewal at once.
type Renewer struct {
	Credential *Credential
	Sign       SignFunc
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnRenew, if set, runs after each renewal (to save it, for example).
	OnRenew func(*Credential)
}

// minRetry and maxRetry bound the wait between failed renewals: the first
// is under minRetry, and they double to under maxRetry.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

// Run renews until ctx is done.
func (r *Renewer) Run(ctx context.Context) error {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	// Jittered, so that the many workloads of a CA that went away do not
	// all come back to it at once.
	backoff := retry.New(minRetry, maxRetry)
	for {
		if !retry.Sleep(ctx, max(RenewAt(r.Credential.Leaf()).Sub(now()), 0), nil) {
			return nil
		}
		if err := r.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := backoff.Next()
			log.Warn("certificate renewal failed; retrying", "id", r.Credential.ID(), "expires", r.Credential.Expiry(), "retry_in", wait, "err", err)
			if !retry.Sleep(ctx, wait, nil) {
				return nil
			}
			continue
		}
		backoff.Reset()
		log.Debug("certificate renewed", "id", r.Credential.ID(), "expires", r.Credential.Expiry())
		if r.OnRenew != nil {
			r.OnRenew(r.Credential)
		}
	}
}

func (r *Renewer) renew(ctx context.Context) error {
	key, err := GenerateKey()
	if err != nil {
		return err
	}
	csr, err := NewCSR(key)
	if err != nil {
		return err
	}
	chain, err := r.Sign(ctx, csr)
	if err != nil {
		return err
	}
	if len(chain) == 0 {
		return fmt.Errorf("trust: the CA returned no certificate")
	}
	got, err1 := x509.MarshalPKIXPublicKey(chain[0].PublicKey)
	want, err2 := x509.MarshalPKIXPublicKey(key.Public())
	if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("trust: the CA returned a certificate for another key")
	}
	if id, err := x509svid.IDFromCert(chain[0]); err != nil || id != r.Credential.ID() {
		return fmt.Errorf("trust: the CA returned a certificate for %v, want %s", id, r.Credential.ID())
	}
	return r.Credential.Set(chain, key)
}
