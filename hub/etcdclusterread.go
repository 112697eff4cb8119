package hub

import (
	"context"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// clusterRead is what etcd holds of one cluster's records, read once by
// a publish of several chunks and kept up to date with the chunks it
// writes, so that each chunk's checked put needs no read of its own. A
// chunk whose put finds a key changed by someone else reads for itself
// again, and so do the chunks after it.
type clusterRead struct {
	cluster, prefix string
	byKey           map[string]storedRecord
	bad             map[string]error // keys that hold no valid record
	stale           bool
}

// readCluster reads every record of cluster, at one revision.
func (b *etcdBackend) readCluster(ctx context.Context, cluster string) (*clusterRead, error) {
	cr := &clusterRead{cluster: cluster, prefix: b.key(store.BucketRecords, cluster+"\x00")}
	reset := func() { cr.byKey, cr.bad = make(map[string]storedRecord), make(map[string]error) }
	reset()
	_, err := b.readAll(ctx, cr.prefix, reset, func(kv *mvccpb.KeyValue) error {
		sr := storedRecord{key: string(kv.Key)}
		if err := readOne(&sr, []*mvccpb.KeyValue{kv}); err != nil {
			cr.bad[sr.key] = err
			return nil
		}
		cr.byKey[sr.key] = sr
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cr, nil
}

// usable reports whether the read may stand in for one of chunk's.
func (cr *clusterRead) usable() bool { return cr != nil && !cr.stale }

// lookup answers for chunk what readStored would: each record's key as
// stored, and the cluster's first stored record. A key that holds no
// valid record is refused as readStored refuses it.
func (cr *clusterRead) lookup(b *etcdBackend, chunk []registry.Verified) ([]storedRecord, map[string]storedRecord, error) {
	keys := make([]storedRecord, len(chunk))
	for i, v := range chunk {
		k := b.key(store.BucketRecords, store.RecordKey(v.Record.GetCluster(), v.Record.GetKey()))
		if err := cr.bad[k]; err != nil {
			return nil, nil, err
		}
		keys[i] = cr.byKey[k]
		keys[i].key = k
	}
	first := ""
	for k := range cr.byKey {
		if first == "" || k < first {
			first = k
		}
	}
	for k, err := range cr.bad {
		if k < first || first == "" {
			return nil, nil, err
		}
	}
	w := storedRecord{key: cr.prefix}
	if first != "" {
		w = cr.byKey[first]
	}
	return keys, map[string]storedRecord{cr.cluster: w}, nil
}

// wrote notes the records a chunk's put stored, at revision rev.
func (cr *clusterRead) wrote(keys []storedRecord, rev int64) {
	if cr == nil {
		return
	}
	for _, k := range keys {
		k.modRev = rev
		cr.byKey[k.key] = k
	}
}

// changed marks the read as out of date: another writer got in between.
func (cr *clusterRead) changed() {
	if cr != nil {
		cr.stale = true
	}
}
