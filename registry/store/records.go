package store

import (
	"fmt"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/protobuf/proto"
)

// RecordOps returns the store writes for records that Set.Newer accepted: a
// new incarnation first deletes everything its owner stored before.
func RecordOps(set *registry.Set, recs []registry.Verified) []Op {
	var ops []Op
	reset := make(map[string]bool)
	for _, v := range recs {
		cluster := v.Record.GetCluster()
		if !reset[cluster] && v.Record.GetVersion().GetIncarnation() > set.Version(cluster).GetIncarnation() {
			reset[cluster] = true
			ops = append(ops, Op{Bucket: BucketRecords, Key: cluster + "\x00", Prefix: true})
		}
		data, _ := proto.Marshal(v.Signed)
		ops = append(ops, Op{Bucket: BucketRecords, Key: RecordKey(cluster, v.Record.GetKey()), Value: data})
	}
	return ops
}

// LoadRecords reads every stored record as it was verified when stored:
// decoded, not verified again, the records of one signer sharing one copy
// of its certificate.
func LoadRecords(st *Store) ([]registry.Verified, error) {
	var recs []registry.Verified
	signers := make(registry.SignerCache)
	err := st.ForEach(BucketRecords, func(key string, value []byte) error {
		sr := new(registrypb.SignedRecord)
		if err := proto.Unmarshal(value, sr); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		rec := new(registrypb.Record)
		if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		signers.Intern(sr)
		recs = append(recs, registry.Verified{Record: rec, Signed: sr})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", st.Path(), err)
	}
	return recs, nil
}
