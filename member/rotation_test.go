package member_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// renewer keeps a workload SVID current from its cluster's CA, renewing
// after a third of its lifetime, so that a loaded machine still renews in
// time.
type renewer struct {
	authority *trust.Authority
	id        spiffeid.ID
	cred      *trust.Credential
	renewals  atomic.Int64
	err       atomic.Pointer[error]
}

// newRenewer issues the first SVID with ttl; renewals ask for an hour,
// which the CA caps.
func newRenewer(t *testing.T, a *trust.Authority, id string, ttl time.Duration) *renewer {
	r := &renewer{authority: a, id: spiffeid.RequireFromString(id)}
	r.cred = issueSVID(t, a, id, ttl)
	return r
}

func (r *renewer) run(ctx context.Context) {
	issued := time.Now()
	for {
		leaf := r.cred.Leaf()
		t := time.NewTimer(time.Until(issued.Add(leaf.NotAfter.Sub(issued) / 3)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		key, err := trust.GenerateKey()
		if err == nil {
			issued = time.Now()
			var chain []*x509.Certificate
			if chain, err = r.authority.Issue(r.id, key.Public(), time.Hour); err == nil {
				err = r.cred.Set(chain, key)
			}
		}
		if err != nil {
			r.err.Store(&err)
			return
		}
		r.renewals.Add(1)
	}
}

// handshakeStats counts a client's connections.
type handshakeStats struct {
	attempts, failed atomic.Int64
	mu               sync.Mutex // guards the fields below
	firstErrs        []error
	issuers          map[string]int // server leaf's authority key ID -> connections
}

func (s *handshakeStats) record(leaf *x509.Certificate, err error) {
	s.attempts.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failed.Add(1)
		if len(s.firstErrs) < 5 {
			s.firstErrs = append(s.firstErrs, err)
		}
		return
	}
	s.issuers[string(leaf.AuthorityKeyId)]++
}

func TestTrustRootRotationWithoutFailedHandshakes(t *testing.T) {
	t.Parallel()
	const maxTTL = 4 * time.Second
	tm := newMesh(t, testTimers)
	ms := federate(t, tm, map[string]func(*member.Config){
		"east": func(c *member.Config) { c.MaxSVIDTTL = maxTTL },
	}, "east", "west")
	east, west := ms["east"].Member, ms["west"].Member
	ctx := deadlineContext(t, 40*time.Second)

	before := east.Authority().Bundle()
	seqBefore, _ := before.SequenceNumber()
	oldRoots := before.X509Authorities()

	// Replicas of east's server renew early, at staggered times:
	// whenever signing switches, some of them still present old-root SVIDs
	// for a while, so a root dropped too early shows as failed handshakes.
	const replicas = 8
	var servers []*renewer
	var addrs []string
	var serverLog, clientLog logBuffer
	serverID := "spiffe://east.shop/ns/shop/sa/order"
	for i := range replicas {
		r := newRenewer(t, east.Authority(), serverID, maxTTL/2+maxTTL/2*time.Duration(i)/replicas)
		if life := lifetime(r.cred.Leaf()); life > maxTTL {
			t.Fatalf("east issued an SVID for %s; MaxSVIDTTL is %s", life, maxTTL)
		}
		servers = append(servers, r)
		addrs = append(addrs, startWorkload(t, trust.MTLSServer(r.cred, east.Bundles(), tlsconfig.AuthorizeMemberOf(westTD), serverLog.logger())))
	}
	if life := lifetime(issueSVID(t, east.Authority(), serverID, time.Hour).Leaf()); life > maxTTL {
		t.Fatalf("east issued an SVID for %s; MaxSVIDTTL is %s", life, maxTTL)
	}

	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopRun()
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	for _, r := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(runCtx)
		}()
	}
	stats := &handshakeStats{issuers: make(map[string]int)}
	for _, sa := range []string{"frontend", "checkout"} {
		conf := trust.MTLSClient(issueSVID(t, west.Authority(), "spiffe://west.shop/ns/shop/sa/"+sa, time.Hour), west.Bundles(),
			tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverID)), clientLog.logger())
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				leaf, err := handshake(runCtx, addrs[n%len(addrs)], conf)
				if runCtx.Err() != nil {
					return // stopped mid-handshake: not a refusal
				}
				stats.record(leaf, err)
			}
		}()
	}
	// Between handshakes, every SVID a replica presents must be one that
	// west's bundles accept at that moment.
	var untrusted atomic.Int64
	var firstUntrusted atomic.Pointer[error]
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tick.C:
			}
			for _, r := range servers {
				svid, _ := r.cred.GetX509SVID()
				if _, _, err := x509svid.Verify(svid.Certificates, west.Bundles()); err != nil {
					untrusted.Add(1)
					firstUntrusted.CompareAndSwap(nil, &err)
				}
			}
		}
	}()
	// Start once every replica renewed, so their renewals are spread out.
	fedtest.Eventually(t, 10*time.Second, "every replica renewed once", func() bool {
		for _, r := range servers {
			if r.renewals.Load() == 0 {
				return false
			}
		}
		return stats.attempts.Load() >= 5
	})

	stream, err := controlPlaneWithFiles(t, east.Addr(), ms["east"].Dir).RotateRoot(ctx, &hubpb.RotateRootRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	var last *hubpb.RotateRootProgress
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rotation stream after %v: %v", phases, err)
		}
		t.Logf("rotation: phase %s, sequence %d: %s", p.GetPhase(), p.GetBundleSequence(), p.GetMessage())
		phases = append(phases, p.GetPhase())
		last = p
	}
	if want := []string{trust.PhaseAdded, trust.PhaseSwitched, trust.PhaseStable}; !slices.Equal(phases, want) {
		t.Fatalf("rotation phases %v, want %v", phases, want)
	}
	if got := last.GetBundleSequence(); got != seqBefore+2 {
		t.Fatalf("bundle sequence went from %d to %d, want +2", seqBefore, got)
	}

	// West's view: the new sequence, and only the new root.
	fedtest.Eventually(t, 10*time.Second, "west holds east's final bundle", func() bool {
		seq, _ := west.Bundles().Sequence(eastTD)
		return seq == seqBefore+2
	})
	view, err := west.Bundles().GetBundleForTrustDomain(eastTD)
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range oldRoots {
		if view.HasX509Authority(old) {
			t.Fatal("west still trusts east's old root")
		}
	}
	if got := view.X509Authorities(); len(got) != 1 {
		t.Fatalf("west trusts %d roots of east, want 1", len(got))
	}
	if hubView, err := tm.Hub.Bundles().GetBundleForTrustDomain(eastTD); err != nil || !hubView.Equal(view) {
		t.Fatalf("hub's bundle of east differs from west's (%v)", err)
	}
	// Keep connecting a little after the old root is gone everywhere.
	after := stats.attempts.Load()
	fedtest.Eventually(t, 5*time.Second, "handshakes after the rotation", func() bool { return stats.attempts.Load() >= after+10 })
	stop()

	var renewals int64
	for i, r := range servers {
		if p := r.err.Load(); p != nil {
			t.Fatalf("server %d SVID renewal: %v", i, *p)
		}
		svid, _ := r.cred.GetX509SVID()
		if _, _, err := x509svid.Verify(svid.Certificates, west.Bundles()); err != nil {
			t.Fatalf("server %d SVID does not verify against east's final bundle: %v", i, err)
		}
		renewals += r.renewals.Load()
	}
	attempts, failed := stats.attempts.Load(), stats.failed.Load()
	t.Logf("handshakes attempted %d, failed %d; server SVIDs renewed %d times; server roots seen %d", attempts, failed, renewals, len(stats.issuers))
	if failed != 0 {
		t.Fatalf("%d of %d handshakes failed during the rotation, first: %v\nserver log:\n%s\nclient log:\n%s", failed, attempts, stats.firstErrs, serverLog.String(), clientLog.String())
	}
	if n := untrusted.Load(); n != 0 {
		t.Fatalf("%d times a server presented an SVID that west's bundles refuse, first: %v", n, *firstUntrusted.Load())
	}
	if attempts <= 50 {
		t.Fatalf("only %d handshakes attempted; the rotation was not exercised", attempts)
	}
	if len(stats.issuers) < 2 {
		t.Fatalf("clients saw server SVIDs of %d root(s); the test must span the switch", len(stats.issuers))
	}
}
