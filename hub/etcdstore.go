package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEtcdPrefix is the key prefix under which replicas keep everything.
const DefaultEtcdPrefix = "/federate/"

const (
	// etcdTimeout bounds one etcd call: past it a write is refused with
	// Unavailable rather than held while etcd is away.
	etcdTimeout = 5 * time.Second
	// etcdMaxOps stays under etcd's default --max-txn-ops (128);
	// etcdMaxTxnBytes under its default --max-request-bytes (1.5 MiB).
	etcdMaxOps      = 100
	etcdMaxTxnBytes = 1 << 20
)

// EtcdConfig says how hub replicas reach the etcd they share.
type EtcdConfig struct {
	// Endpoints are etcd client URLs, e.g. https://10.0.0.1:2379.
	Endpoints []string
	// CertFile and KeyFile are the hub's client certificate and key; CAFile
	// the roots that etcd's serving certificates chain to.
	CertFile, KeyFile, CAFile string
	// Prefix is the key prefix of this federation (default /federate/).
	Prefix string
}

func (c *EtcdConfig) validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("hub: --store etcd needs --etcd-endpoints, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379")
	}
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return errors.New("hub: --store etcd needs --etcd-cert, --etcd-key and --etcd-ca: the hub speaks to etcd only over mutual TLS")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	return nil
}

// etcdBackend keeps the hub's buckets in etcd under one prefix:
// <prefix><bucket>/<key>.
type etcdBackend struct {
	cli    *clientv3.Client
	cfg    EtcdConfig
	closed sync.Once
	checks *memberChecks // asked for by calls that timed out
}

// openEtcd connects and checks that some endpoint answers; the error names
// every endpoint and what each said.
func openEtcd(ctx context.Context, cfg EtcdConfig) (*etcdBackend, error) {
	tlsConf, err := etcdTLS(cfg)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, TLS: tlsConf, DialTimeout: etcdTimeout,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
		Logger: zap.NewNop(), Context: ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	b := &etcdBackend{cli: cli, cfg: cfg, checks: newMemberChecks()}
	if err := b.probe(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	return b, nil
}

func etcdTLS(cfg EtcdConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("hub: etcd client certificate %s / key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	roots, err := trust.LoadCertificates(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("hub: etcd CA %s: %w", cfg.CAFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// probe asks every endpoint for its status, then reads through the
// cluster: a quorum answers.
func (b *etcdBackend) probe(ctx context.Context) error {
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed []string
	)
	for _, ep := range b.cfg.Endpoints {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
			defer cancel()
			if _, err := b.cli.Status(cctx, ep); err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s (%v)", ep, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) == len(b.cfg.Endpoints) {
		return fmt.Errorf("hub: no etcd endpoint answers; tried %s for %s each: %s; check --etcd-endpoints, that etcd runs, and --etcd-cert/--etcd-key/--etcd-ca",
			strings.Join(b.cfg.Endpoints, ", "), etcdTimeout, strings.Join(failed, "; "))
	}
	cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	if _, err := b.cli.Get(cctx, b.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		return b.unavailable("read", err)
	}
	return nil
}

// unavailable explains a failed etcd call.
func (b *etcdBackend) unavailable(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("hub: etcd at %s did not %s within %s (%v): the hub refuses changes until etcd answers, and serves subscribers meanwhile",
		strings.Join(b.cfg.Endpoints, ","), what, etcdTimeout, err)
}

func (b *etcdBackend) key(bucket, key string) string { return b.cfg.Prefix + bucket + "/" + key }

// split turns an etcd key into bucket and key; ok is false for a key that
// is not in a bucket of the hub's.
func (b *etcdBackend) split(k string) (bucket, key string, ok bool) {
	rest, ok := strings.CutPrefix(k, b.cfg.Prefix)
	if !ok {
		return "", "", false
	}
	bucket, key, ok = strings.Cut(rest, "/")
	if !ok || (bucket != store.BucketRecords && bucket != store.BucketMeta && bucket != store.BucketTokens) {
		return "", "", false
	}
	return bucket, key, true
}

func (b *etcdBackend) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	var resp *clientv3.GetResponse
	err := b.idempotent(ctx, func(ctx context.Context) (err error) {
		resp, err = b.cli.Get(ctx, b.key(bucket, key))
		return err
	})
	if err != nil {
		return nil, b.unavailable("read", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

func (b *etcdBackend) ForEach(ctx context.Context, bucket string, fn func(key string, value []byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, 4*etcdTimeout)
	defer cancel()
	prefix := b.key(bucket, "")
	resp, err := b.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return b.unavailable("read", err)
	}
	for _, kv := range resp.Kvs {
		if err := fn(strings.TrimPrefix(string(kv.Key), prefix), kv.Value); err != nil {
			return err
		}
	}
	return nil
}

// Write applies ops in transactions of at most etcdMaxOps operations: a
// publish of many records may take several, each atomic.
func (b *etcdBackend) Write(ctx context.Context, ops ...store.Op) error {
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	eops, err := b.expand(ctx, ops)
	if err != nil {
		return b.unavailable("read", err)
	}
	for len(eops) > 0 {
		n, size := 0, 0
		for n < len(eops) && n < etcdMaxOps && (n == 0 || size+opSize(eops[n]) <= etcdMaxTxnBytes) {
			size += opSize(eops[n])
			n++
		}
		// Puts and deletes alone: a second try leaves what one would.
		if err := b.idempotent(ctx, func(ctx context.Context) error {
			_, err := b.cli.Txn(ctx).Then(eops[:n]...).Commit()
			return err
		}); err != nil {
			return b.unavailable("write", err)
		}
		eops = eops[n:]
	}
	return nil
}

func (b *etcdBackend) WriteIf(ctx context.Context, bucket, key string, want []byte, ops ...store.Op) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	eops, err := b.expand(ctx, ops)
	if err != nil {
		return false, b.unavailable("read", err)
	}
	k := b.key(bucket, key)
	cmp := clientv3.Compare(clientv3.Value(k), "=", string(want))
	if want == nil {
		cmp = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
	}
	resp, err := b.cli.Txn(ctx).If(cmp).Then(eops...).Commit()
	if err != nil {
		return false, b.unavailable("write", err)
	}
	return resp.Succeeded, nil
}

// expand turns store ops into etcd ops. etcd refuses a transaction whose
// put falls in one of its deleted ranges, so a prefix delete that a later
// put overlaps becomes deletes of the keys it would remove but for those.
func (b *etcdBackend) expand(ctx context.Context, ops []store.Op) ([]clientv3.Op, error) {
	last := make(map[string]int, len(ops))
	for i, op := range ops {
		if !op.Prefix {
			last[b.key(op.Bucket, op.Key)] = i
		}
	}
	var out []clientv3.Op
	for i, op := range ops {
		k := b.key(op.Bucket, op.Key)
		switch {
		case op.Prefix:
			overlaps := false
			for pk := range last {
				overlaps = overlaps || strings.HasPrefix(pk, k)
			}
			if !overlaps {
				out = append(out, clientv3.OpDelete(k, clientv3.WithPrefix()))
				continue
			}
			resp, err := b.cli.Get(ctx, k, clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				return nil, err
			}
			for _, kv := range resp.Kvs {
				if _, put := last[string(kv.Key)]; !put {
					out = append(out, clientv3.OpDelete(string(kv.Key)))
				}
			}
		case last[k] != i:
			// A later op on the same key wins; etcd refuses duplicates.
		case op.Value == nil:
			out = append(out, clientv3.OpDelete(k))
		default:
			out = append(out, clientv3.OpPut(k, string(op.Value)))
		}
	}
	return dedupeDeletes(out), nil
}

// dedupeDeletes drops repeated single-key deletes, which etcd refuses in
// one transaction.
func dedupeDeletes(ops []clientv3.Op) []clientv3.Op {
	seen := make(map[string]bool)
	out := ops[:0]
	for _, op := range ops {
		if op.IsDelete() && len(op.RangeBytes()) == 0 {
			if seen[string(op.KeyBytes())] {
				continue
			}
			seen[string(op.KeyBytes())] = true
		}
		out = append(out, op)
	}
	return out
}

func opSize(op clientv3.Op) int { return len(op.KeyBytes()) + len(op.ValueBytes()) + 16 }

func (b *etcdBackend) Where() string {
	return "etcd at " + strings.Join(b.cfg.Endpoints, ",") + " under " + b.cfg.Prefix
}

func (b *etcdBackend) Remedy() string {
	return "check that etcd at " + strings.Join(b.cfg.Endpoints, ",") + " runs with a quorum and that this replica reaches it"
}

func (b *etcdBackend) Close() error {
	var err error
	b.closed.Do(func() { err = b.cli.Close() })
	return err
}
