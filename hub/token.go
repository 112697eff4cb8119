package hub

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/federate/federate/membership"
)

// tokenRecord is what the hub stores per token: never the secret itself.
type tokenRecord struct {
	Cluster     string    `json:"cluster"`
	TrustDomain string    `json:"trustDomain,omitempty"`
	Expires     time.Time `json:"expires"`
	SecretHash  []byte    `json:"secretHash"`
	UsedAt      time.Time `json:"usedAt,omitzero"`
}

func hashSecret(secret []byte) []byte {
	sum := sha256.Sum256(secret)
	return sum[:]
}

// check validates a presented token against its stored record.
func (r *tokenRecord) check(t *membership.Token, now time.Time) error {
	if subtle.ConstantTimeCompare(r.SecretHash, hashSecret(t.Secret)) != 1 {
		return membership.ErrTokenUnknown
	}
	if r.Cluster != t.Cluster {
		return fmt.Errorf("%w: it was issued for cluster %q, not %q", membership.ErrTokenWrongCluster, r.Cluster, t.Cluster)
	}
	if !r.UsedAt.IsZero() {
		return fmt.Errorf("%w at %s; create a new one with 'federate token create'", membership.ErrTokenUsed, r.UsedAt.UTC().Format(time.RFC3339))
	}
	if now.After(r.Expires) {
		return fmt.Errorf("%w at %s; create a new one with 'federate token create'", membership.ErrTokenExpired, r.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
