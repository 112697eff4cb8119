package registry

import (
	"fmt"

	"github.com/federate/federate/registry/registrypb"
)

// VerifyAll verifies every record, failing on the first bad one.
func (v *Verifier) VerifyAll(signed []*registrypb.SignedRecord) ([]Verified, error) {
	out := make([]Verified, 0, len(signed))
	for i, sr := range signed {
		rec, err := v.Verify(sr)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		out = append(out, Verified{Record: rec, Signed: sr})
	}
	return out, nil
}

// SignerCache interns the signer certificates of records read from a
// store, so that the records of one cluster share one copy, as they do when
// Verifier.Verify took them in.
type SignerCache map[string][]byte

func (c SignerCache) Intern(sr *registrypb.SignedRecord) {
	if der, ok := c[string(sr.GetSigner())]; ok {
		sr.Signer = der
		return
	}
	c[string(sr.GetSigner())] = sr.GetSigner()
}
