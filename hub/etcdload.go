package hub

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdPageKeys is how many keys one page of a full read holds: a page of
// records is a few MiB, well under gRPC's message limits, and a replica
// decodes one page while it holds no more than that of the response.
const etcdPageKeys = 2000

// etcdReadTries bounds how often a full read starts again because etcd
// compacted the revision it was reading at between two of its pages.
const etcdReadTries = 3

// readAll calls fn with every key and value under prefix as etcd held
// them at one revision, in key order, a page at a time, and returns that
// revision: a watch from the next one misses nothing and repeats nothing.
// reset is called before a read that starts again (after a compaction
// between pages), so that fn's caller drops what the earlier try gave.
func (b *etcdBackend) readAll(ctx context.Context, prefix string, reset func(), fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	for try := 1; ; try++ {
		rev, err := b.readPages(ctx, prefix, fn)
		if !errors.Is(err, rpctypes.ErrCompacted) {
			return rev, err
		}
		if try == etcdReadTries {
			return 0, b.unavailable("read", fmt.Errorf("compacted under each of %d full reads: %w", try, err))
		}
		reset()
	}
}

// readPages is one try of readAll; an etcd error is returned as it is,
// for readAll to tell a compaction.
func (b *etcdBackend) readPages(ctx context.Context, prefix string, fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from, rev := prefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(etcdPageKeys)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		resp, err := b.cli.Get(cctx, from, opts...)
		cancel()
		if errors.Is(err, rpctypes.ErrCompacted) {
			return 0, err
		}
		if err != nil {
			return 0, b.unavailable("read", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
