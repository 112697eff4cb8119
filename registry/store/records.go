package store

import (
	"github.com/federate/federate/registry"
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
