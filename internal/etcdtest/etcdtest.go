// Package etcdtest runs a real etcd cluster for tests: etcd v3.7's embed
// server, several members on loopback, clients authenticated by mutual
// TLS. Members can be stopped and started again on their data.
package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/internal/testport"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long members take to form a cluster.
const startTimeout = 60 * time.Second

// Cluster is a running etcd cluster.
type Cluster struct {
	Dir string
	// Endpoints are the members' client URLs, in member order.
	Endpoints []string
	// CertFile, KeyFile and CAFile are a client credential the members
	// accept and the roots of their serving certificates.
	CertFile, KeyFile, CAFile string

	mu      sync.Mutex // guards members' etcd
	members []*member
	initial string
}

type member struct {
	name, dir    string
	client, peer url.URL
	etcd         *embed.Etcd // nil while stopped
}

// Start runs an n-member cluster in a test directory and stops it when
// the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{Dir: t.TempDir()}
	pki := newPKI(t, c.Dir)
	c.CertFile, c.KeyFile, c.CAFile = pki.clientCert, pki.clientKey, pki.caFile
	var initial []string
	for i := range n {
		m := &member{name: fmt.Sprintf("etcd%d", i), dir: filepath.Join(c.Dir, fmt.Sprintf("etcd%d", i))}
		m.client = url.URL{Scheme: "https", Host: testport.Addr(t)}
		m.peer = url.URL{Scheme: "http", Host: testport.Addr(t)}
		c.members = append(c.members, m)
		c.Endpoints = append(c.Endpoints, m.client.String())
		initial = append(initial, m.name+"="+m.peer.String())
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(func() {
		for i := range c.members {
			c.Stop(t, i)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range c.members {
		wg.Go(func() { errs[i] = c.start(i, pki) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.awaitWrites(t)
	return c
}

// awaitWrites returns once the cluster commits a write: members are ready
// before their leader has settled.
func (c *Cluster) awaitWrites(t testing.TB) {
	t.Helper()
	cli := c.Client(t)
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Put(ctx, "/etcdtest/ready", "yes")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcdtest: the cluster commits no write after %s: %v", startTimeout, err)
		}
	}
}

func (c *Cluster) start(i int, pki *pki) error {
	m := c.members[i]
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = m.name, m.dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{m.client}, []url.URL{m.client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{m.peer}, []url.URL{m.peer}
	cfg.InitialCluster, cfg.InitialClusterToken = c.initial, "federate-test"
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pki.serverCert, KeyFile: pki.serverKey, TrustedCAFile: pki.caFile, ClientCertAuth: true}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // test speed; durability is not under test
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdtest: %s: %w", m.name, err)
	case <-time.After(startTimeout):
		e.Close()
		return fmt.Errorf("etcdtest: %s not ready after %s", m.name, startTimeout)
	}
	c.mu.Lock()
	m.etcd = e
	c.mu.Unlock()
	return nil
}

// Stop stops member i, as a crash would from its clients' view; its data
// stays for Restart.
func (c *Cluster) Stop(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	e := c.members[i].etcd
	c.members[i].etcd = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts a stopped member i again on its data and address.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	pki := &pki{caFile: c.CAFile, serverCert: filepath.Join(c.Dir, "server.pem"), serverKey: filepath.Join(c.Dir, "server-key.pem")}
	if err := c.start(i, pki); err != nil {
		t.Fatal(err)
	}
}

// StopAll stops every member; RestartAll starts them again together, as
// a quorum needs.
func (c *Cluster) StopAll(t testing.TB) {
	for i := range c.members {
		c.Stop(t, i)
	}
}

// RestartAll starts every member again.
func (c *Cluster) RestartAll(t testing.TB) {
	t.Helper()
	pki := &pki{caFile: c.CAFile, serverCert: filepath.Join(c.Dir, "server.pem"), serverKey: filepath.Join(c.Dir, "server-key.pem")}
	var wg sync.WaitGroup
	errs := make([]error, len(c.members))
	for i := range c.members {
		wg.Go(func() { errs[i] = c.start(i, pki) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Leader returns the index of the member that leads, or -1.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if m.etcd != nil && m.etcd.Server.Leader() == m.etcd.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Client returns a client of the whole cluster, closed with the test.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	tlsConf, err := (transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, TLS: tlsConf, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Compact compacts the cluster's history up to its current revision.
func (c *Cluster) Compact(t testing.TB) int64 {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}
