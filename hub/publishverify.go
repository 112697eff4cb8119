package hub

import (
	"bytes"
	"fmt"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/protobuf/proto"
)

// resendSize is the size from which a publish is checked for records the
// hub holds already: a member sends its whole slice again after a failed
// publish, while a change is a few records.
const resendSize = 16

// verifyPublish verifies the records cluster publishes, leaving out those
// the hub holds byte for byte (record, signature and signer): it verified
// them when it took them in, and they are not newer than themselves, so
// the publish would drop them anyway. A member that sends its slice again
// after a failure then costs no signature check per record already held.
func (s *Server) verifyPublish(cluster string, signed []*registrypb.SignedRecord) ([]registry.Verified, error) {
	if len(signed) < resendSize {
		return s.verifier.VerifyAll(signed)
	}
	held := s.set.Entries(cluster)
	out := make([]registry.Verified, 0, len(signed))
	for i, sr := range signed {
		if heldAlready(held, cluster, sr) {
			continue
		}
		rec, err := s.verifier.Verify(sr)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		out = append(out, registry.Verified{Record: rec, Signed: sr})
	}
	return out, nil
}

// heldAlready reports whether held has sr, of cluster, byte for byte.
func heldAlready(held map[string]*registry.Entry, cluster string, sr *registrypb.SignedRecord) bool {
	rec := new(registry.Record)
	if proto.Unmarshal(sr.GetRecord(), rec) != nil || rec.GetCluster() != cluster {
		return false
	}
	e := held[rec.GetKey()]
	return e != nil && e.Signed != nil &&
		bytes.Equal(e.Signed.GetRecord(), sr.GetRecord()) &&
		bytes.Equal(e.Signed.GetSignature(), sr.GetSignature()) &&
		bytes.Equal(e.Signed.GetSigner(), sr.GetSigner())
}
