package hub

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errCompacted says that a watch asked for revisions etcd has compacted:
// changes were missed, and only a full read catches up.
var errCompacted = errors.New("hub: etcd compacted the revisions this replica had yet to see")

// change is one key's change under the prefix, as a watch reports it.
type change struct {
	bucket, key string
	value       []byte // nil for a delete
	foreign     string // set instead for a key outside the hub's buckets
}

// watch calls apply with the changes of each revision from from on, until
// ctx ends or the watch breaks. It returns the revision to resume from,
// and errCompacted if from is gone.
func (b *etcdBackend) watch(ctx context.Context, from int64, apply func([]change)) (int64, error) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := b.cli.Watch(ctx, b.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			return from, fmt.Errorf("%w (compacted at %d, wanted %d)", errCompacted, resp.CompactRevision, from)
		}
		if err := resp.Err(); err != nil {
			return from, err
		}
		var changes []change
		for _, ev := range resp.Events {
			c := change{value: ev.Kv.Value}
			if ev.Type == clientv3.EventTypeDelete {
				c.value = nil
			}
			var ok bool
			if c.bucket, c.key, ok = b.split(string(ev.Kv.Key)); !ok {
				c.foreign = string(ev.Kv.Key)
			}
			changes = append(changes, c)
			from = max(from, ev.Kv.ModRevision+1)
		}
		if len(changes) > 0 {
			apply(changes)
		}
	}
	return from, ctx.Err()
}
