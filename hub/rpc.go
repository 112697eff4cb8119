package hub

import (
	"fmt"
	"time"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// stopGrace bounds a graceful gRPC stop before open streams are cut.
const stopGrace = 5 * time.Second

func serverKeepalive() grpc.ServerOption {
	return grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second})
}

func serverKeepalivePolicy() grpc.ServerOption {
	return grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true})
}

func clientKeepalive() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 15 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true})
}

// gracefulStop lets in-flight calls finish, then cuts what remains.
func gracefulStop(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// verifyAll verifies every record, failing on the first bad one.
func verifyAll(v *registry.Verifier, signed []*registrypb.SignedRecord) ([]registry.Verified, error) {
	out := make([]registry.Verified, 0, len(signed))
	for i, sr := range signed {
		rec, err := v.Verify(sr)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		out = append(out, registry.Verified{Record: rec, Signed: sr})
	}
	return out, nil
}

// recordOps returns the store writes for records that Set.Newer accepted: a
// new incarnation first deletes everything its owner stored before.
func recordOps(set *registry.Set, recs []registry.Verified) []store.Op {
	var ops []store.Op
	reset := make(map[string]bool)
	for _, v := range recs {
		cluster := v.Record.GetCluster()
		if !reset[cluster] && v.Record.GetVersion().GetIncarnation() > set.Version(cluster).GetIncarnation() {
			reset[cluster] = true
			ops = append(ops, store.Op{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true})
		}
		data, _ := proto.Marshal(v.Signed)
		ops = append(ops, store.Op{Bucket: store.BucketRecords, Key: store.RecordKey(cluster, v.Record.GetKey()), Value: data})
	}
	return ops
}

// signerCache interns the signer certificates of records read from a
// store, so that the records of one cluster share one copy, as they do when
// Verifier.Verify took them in.
type signerCache map[string][]byte

func (c signerCache) intern(sr *registrypb.SignedRecord) {
	if der, ok := c[string(sr.GetSigner())]; ok {
		sr.Signer = der
		return
	}
	c[string(sr.GetSigner())] = sr.GetSigner()
}

// sendBatches sends records in bounded messages; last is set on the final
// one, which is sent even when there are no records.
func sendBatches(recs []*registrypb.SignedRecord, send func(batch []*registrypb.SignedRecord, last bool) error) error {
	for {
		n := 0
		size := 0
		for n < len(recs) && n < maxBatchRecords && size < MaxMessageBytes/4 {
			size += proto.Size(recs[n])
			n++
		}
		last := n == len(recs)
		if err := send(recs[:n], last); err != nil {
			return err
		}
		recs = recs[n:]
		if last {
			return nil
		}
	}
}
