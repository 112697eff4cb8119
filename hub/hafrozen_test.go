package hub_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/etcdtest"
	"github.com/federate/federate/internal/fedtest"
)

// A member that hangs with its connections open (a stopped process, a hung
// host) costs no write: a call sent to it times out after a second, the
// replica checks the members and leaves it, and the call is made again on
// the others, well within the hub's etcd timeout. The member is reached
// through a proxy that stops passing bytes, as SIGSTOP would stop it
// ('lab verify --ha' freezes a real etcd process).
func TestHAEtcdFrozenMemberLosesNoWrite(t *testing.T) {
	const etcdTimeout = 5 * time.Second // hub/etcdstore.go
	ec := etcdtest.Start(t, 3)
	frozen := newFreezer(t, ec.Endpoints[0])
	endpoints := append([]string{frozen.url}, ec.Endpoints[1:]...)
	caFile := filepath.Join(t.TempDir(), "mesh-ca.pem")
	if _, err := hub.CreateCAFile("shop", caFile, time.Now()); err != nil {
		t.Fatal(err)
	}
	m := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) {
		c.Store, c.CAFile = hub.StoreEtcd, caFile
		c.Etcd = hub.EtcdConfig{Endpoints: endpoints, CertFile: ec.CertFile, KeyFile: ec.KeyFile, CAFile: ec.CAFile}
	})
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	admin := m.AdminClient()
	create := func(name string) error {
		cctx, cancel := context.WithTimeout(ctx, 12*time.Second)
		defer cancel()
		_, err := admin.CreateToken(cctx, &hubpb.CreateTokenRequest{Cluster: name})
		return err
	}
	if err := create("before"); err != nil {
		t.Fatal(err)
	}

	frozen.freeze()
	const writers, each = 8, 6 // a write every 125 ms for 6 s
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				start := time.Now()
				err := create(fmt.Sprintf("w%d-%d", w, i))
				if took := time.Since(start); err != nil || took >= etcdTimeout {
					errs <- fmt.Errorf("token %d of writer %d took %s (error: %v)", i, w, took.Round(time.Millisecond), err)
				}
				time.Sleep(time.Second)
			}
		})
		time.Sleep(time.Second / writers)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		failed++
		t.Error(err)
	}
	if failed > 0 {
		t.Errorf("%d of %d writes failed or waited out the hub's etcd timeout with a member frozen", failed, writers*each)
	}
	if got := m.Hub.EtcdEndpointsInUse(); !slices.Equal(got, ec.Endpoints[1:]) {
		t.Errorf("after 6 s with a member frozen, the replica calls %v, want %v", got, ec.Endpoints[1:])
	}
	frozen.thaw()
	fedtest.Eventually(t, 20*time.Second, "the replica calls the thawed member again", func() bool {
		return len(m.Hub.EtcdEndpointsInUse()) == 3
	})
}

// freezer is a TCP proxy to an etcd member's client URL that can stop
// passing bytes while keeping its connections open.
type freezer struct {
	url    string
	mu     sync.Mutex
	thawed chan struct{} // closed while bytes pass
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{url: "https://" + lis.Addr().String(), thawed: make(chan struct{})}
	close(f.thawed)
	var conns sync.WaitGroup
	t.Cleanup(func() {
		lis.Close()
		f.thaw()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", u.Host)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, u)
			f.mu.Unlock()
			conns.Go(func() { f.pass(u, c) })
			conns.Go(func() { f.pass(c, u) })
		}
	}()
	return f
}

// pass copies src to dst, holding each piece while frozen.
func (f *freezer) pass(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			thawed := f.thawed
			f.mu.Unlock()
			<-thawed
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.thawed = make(chan struct{})
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
	default:
		close(f.thawed)
	}
}
