package hub

import (
	"context"
	"fmt"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// etcdMaxTries bounds how often a put of records is tried again after
// another replica changed one of its keys in between; each try either
// writes a record or finds it beaten, so concurrent writers settle fast.
const etcdMaxTries = 50

// putRecords stores records so that an older version never replaces a
// newer one, whichever replica writes it: each key is read with its mod
// revision, and the put is a transaction that succeeds only if the key
// (and its cluster's first record, which tells the incarnation etcd holds)
// still has that revision; on a conflict it reads again. It returns the
// records it wrote; the others lost to what etcd holds, which the watch
// brings to this replica. held is the incarnation this replica holds of a
// cluster: a record of a newer one replaces the cluster's older records.
// Each etcd call has etcdTimeout: a large publish takes several, and may
// take longer in all while etcd is slow but answers.
func (b *etcdBackend) putRecords(ctx context.Context, recs []registry.Verified, held func(cluster string) uint64) ([]registry.Verified, error) {
	var written []registry.Verified
	reset := make(map[string]uint64) // cluster: the incarnation it moved to
	// A publish of several chunks reads its cluster once, not per chunk.
	var known *clusterRead
	if chunkSize(recs) < len(recs) && oneCluster(recs) {
		var err error
		if known, err = b.readCluster(ctx, recs[0].Record.GetCluster()); err != nil {
			return nil, err
		}
	}
	for len(recs) > 0 {
		n := chunkSize(recs)
		won, stored, err := b.putChunk(ctx, recs[:n], known)
		if err != nil {
			return written, err
		}
		for _, v := range won {
			c, inc := v.Record.GetCluster(), v.Record.GetVersion().GetIncarnation()
			// Older records to drop: etcd held an older incarnation, or this
			// replica did (a reset that was cut short left some).
			if w, ok := stored[c]; (ok && inc > w) || (held(c) != 0 && inc > held(c)) {
				reset[c] = max(reset[c], inc)
			}
		}
		written = append(written, won...)
		recs = recs[n:]
	}
	for cluster, inc := range reset {
		if err := b.dropOlderIncarnations(ctx, cluster, inc); err != nil {
			return written, err
		}
	}
	return written, nil
}

// oneCluster reports whether recs are all of one cluster, as a publish's are.
func oneCluster(recs []registry.Verified) bool {
	for _, v := range recs {
		if v.Record.GetCluster() != recs[0].Record.GetCluster() {
			return false
		}
	}
	return true
}

// chunkSize is how many of recs one transaction takes: a get and a
// compare per record, and one more per cluster, stay under etcdMaxOps.
func chunkSize(recs []registry.Verified) int {
	clusters := make(map[string]bool)
	n, size := 0, 0
	for n < len(recs) {
		c := recs[n].Record.GetCluster()
		ops := n + 1 + len(clusters)
		if !clusters[c] {
			ops++
		}
		if n > 0 && (ops > etcdMaxOps || size+proto.Size(recs[n].Signed) > etcdMaxTxnBytes) {
			break
		}
		clusters[c] = true
		size += proto.Size(recs[n].Signed)
		n++
	}
	return n
}

// storedRecord is what etcd holds at one key, read with its mod revision
// (0 when the key is absent).
type storedRecord struct {
	key     string
	version *registry.Version
	modRev  int64
}

// unchanged is the compare that holds while the key is as read; for a
// cluster with no record (key is then its prefix), while it has none.
func (sr storedRecord) unchanged(prefix bool) clientv3.Cmp {
	cmp := clientv3.Compare(clientv3.ModRevision(sr.key), "=", sr.modRev)
	if prefix && sr.modRev == 0 {
		return cmp.WithPrefix()
	}
	return cmp
}

// putChunk writes the records of chunk that are newer than what etcd
// holds, in one transaction, reading again after a conflict. Its first
// try takes what etcd holds from known, if usable. It returns the records
// written and the incarnation etcd held of each cluster.
func (b *etcdBackend) putChunk(ctx context.Context, chunk []registry.Verified, known *clusterRead) ([]registry.Verified, map[string]uint64, error) {
	for try := 1; ; try++ {
		var keys []storedRecord
		var witnesses map[string]storedRecord
		var err error
		switch {
		case try == 1 && known.usable():
			keys, witnesses, err = known.lookup(b, chunk)
		default:
			keys, witnesses, err = b.readStored(ctx, chunk)
		}
		if err != nil {
			return nil, nil, err
		}
		incarnations := make(map[string]uint64, len(witnesses))
		var cmps []clientv3.Cmp
		for c, w := range witnesses {
			if w.modRev != 0 {
				incarnations[c] = w.version.GetIncarnation()
			}
			cmps = append(cmps, w.unchanged(true))
		}
		var won []registry.Verified
		var puts []clientv3.Op
		var wrote []storedRecord
		for i, v := range chunk {
			inc := v.Record.GetVersion().GetIncarnation()
			if w, ok := incarnations[v.Record.GetCluster()]; (ok && inc < w) || registry.Compare(keys[i].version, v.Record.GetVersion()) >= 0 {
				continue // etcd holds this key newer, or a newer incarnation
			}
			data, err := proto.Marshal(v.Signed)
			if err != nil {
				return nil, nil, fmt.Errorf("hub: encode record %q of %s: %w", v.Record.GetKey(), v.Record.GetCluster(), err)
			}
			won = append(won, v)
			puts = append(puts, clientv3.OpPut(keys[i].key, string(data)))
			wrote = append(wrote, storedRecord{key: keys[i].key, version: v.Record.GetVersion()})
			cmps = append(cmps, keys[i].unchanged(false))
		}
		if len(won) == 0 {
			return nil, incarnations, nil
		}
		cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		resp, err := b.cli.Txn(cctx).If(cmps...).Then(puts...).Commit()
		cancel()
		if err != nil {
			return nil, nil, b.unavailable("write", err)
		}
		if resp.Succeeded {
			known.wrote(wrote, resp.Header.GetRevision())
			return won, incarnations, nil
		}
		known.changed()
		if try == etcdMaxTries {
			return nil, nil, fmt.Errorf("hub: the records of %s in etcd changed under each of %d tries to write %d of them; the publish can be retried",
				chunk[0].Record.GetCluster(), try, len(won))
		}
	}
}

// readStored reads, in one transaction, the stored version of every
// record's key, and each cluster's first stored record: its incarnation
// is the one etcd holds (the info record, keyed "", sorts first).
func (b *etcdBackend) readStored(ctx context.Context, chunk []registry.Verified) ([]storedRecord, map[string]storedRecord, error) {
	var gets []clientv3.Op
	keys := make([]storedRecord, len(chunk))
	for i, v := range chunk {
		keys[i].key = b.key(store.BucketRecords, store.RecordKey(v.Record.GetCluster(), v.Record.GetKey()))
		gets = append(gets, clientv3.OpGet(keys[i].key))
	}
	var clusters []string
	seen := make(map[string]bool)
	for _, v := range chunk {
		if c := v.Record.GetCluster(); !seen[c] {
			seen[c] = true
			clusters = append(clusters, c)
			gets = append(gets, clientv3.OpGet(b.key(store.BucketRecords, c+"\x00"), clientv3.WithPrefix(), clientv3.WithLimit(1)))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	resp, err := b.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, nil, b.unavailable("read", err)
	}
	for i := range keys {
		if err := readOne(&keys[i], resp.Responses[i].GetResponseRange().GetKvs()); err != nil {
			return nil, nil, err
		}
	}
	witnesses := make(map[string]storedRecord, len(clusters))
	for j, c := range clusters {
		w := storedRecord{key: b.key(store.BucketRecords, c+"\x00")}
		kvs := resp.Responses[len(keys)+j].GetResponseRange().GetKvs()
		if len(kvs) > 0 {
			w.key = string(kvs[0].Key)
		}
		if err := readOne(&w, kvs); err != nil {
			return nil, nil, err
		}
		witnesses[c] = w
	}
	return keys, witnesses, nil
}

// readOne fills sr from the key-values a get returned (none or one).
func readOne(sr *storedRecord, kvs []*mvccpb.KeyValue) error {
	if len(kvs) == 0 {
		return nil
	}
	v, err := recordVersion(kvs[0].Value)
	if err != nil {
		return fmt.Errorf("hub: etcd key %q holds no valid record (%v); nothing was written over it: remove it, or give this federation its own --etcd-prefix", kvs[0].Key, err)
	}
	sr.version, sr.modRev = v, kvs[0].ModRevision
	return nil
}

// recordVersion decodes the version of a stored signed record.
func recordVersion(value []byte) (*registry.Version, error) {
	sr := new(registrypb.SignedRecord)
	if err := proto.Unmarshal(value, sr); err != nil {
		return nil, err
	}
	rec := new(registrypb.Record)
	if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
		return nil, err
	}
	return rec.GetVersion(), nil
}

// dropOlderIncarnations deletes a cluster's records of incarnations older
// than inc, each only if it is still the one read: a newer incarnation
// replaces everything its owner had published before.
func (b *etcdBackend) dropOlderIncarnations(ctx context.Context, cluster string, inc uint64) error {
	prefix := b.key(store.BucketRecords, cluster+"\x00")
	for try := 1; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		resp, err := b.cli.Get(cctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			return b.unavailable("read", err)
		}
		var cmps []clientv3.Cmp
		var dels []clientv3.Op
		for _, kv := range resp.Kvs {
			// A key that holds no record is not the hub's to delete.
			if v, err := recordVersion(kv.Value); err != nil || v.GetIncarnation() >= inc {
				continue
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
			dels = append(dels, clientv3.OpDelete(string(kv.Key)))
		}
		if len(dels) == 0 {
			return nil
		}
		done := true
		for len(dels) > 0 {
			n := min(len(dels), etcdMaxOps)
			cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
			tr, err := b.cli.Txn(cctx).If(cmps[:n]...).Then(dels[:n]...).Commit()
			cancel()
			if err != nil {
				return b.unavailable("write", err)
			}
			done = done && tr.Succeeded
			cmps, dels = cmps[n:], dels[n:]
		}
		if done {
			return nil
		}
		if try == etcdMaxTries {
			return fmt.Errorf("hub: the records of %s in etcd changed under each of %d tries to drop those older than incarnation %d", cluster, try, inc)
		}
	}
}
