package member_test

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// startImpostor runs a gossip node that calls itself cluster claimed's
// but holds cluster holder's credential, seeded with every member and
// the hub, as an attacker with a stolen credential would.
func startImpostor(t *testing.T, tm *fedtest.Mesh, holder, claimed string) {
	t.Helper()
	ms, err := membership.LoadMembership(filepath.Join(tm.Dir, holder))
	if err != nil {
		t.Fatal(err)
	}
	node := gossip.New(gossip.Config{
		Bind: "127.0.0.1:0", Seeds: append(ms.GossipSeeds, tm.Seeds()...),
		Credential: tm.ClusterCredential(t, holder), CA: ms.CA,
		Label: ms.Mesh, Profile: "lan", RejoinInterval: 200 * time.Millisecond,
		Logger: tm.Logger().With("node", "impostor"),
	}, gossip.Digest{Name: claimed, Cluster: claimed, Incarnation: uint64(time.Now().UnixNano()), Counter: 1}, nil)
	t.Cleanup(fedtest.Start(t, node.Run, node.Ready()))
}

// stateIn returns cluster's state in a status response, or "".
func stateIn(st *hubpb.StatusResponse, cluster string) string {
	for _, cs := range st.GetClusters() {
		if cs.GetName() == cluster {
			return cs.GetState()
		}
	}
	return ""
}

// A member holding another cluster's valid credential gossips as west
// while west is down: west goes stale everywhere on the normal timers,
// and every member counts and logs the claim against the credential's
// real owner.
func TestIntegrationGossipImpersonationDoesNotKeepAClusterAlive(t *testing.T) {
	t.Parallel()
	tm := startCoffeeShop(t, nil)
	logged := &claimLog{}
	tm.Join("north")
	tm.StartMemberWith("north", func(c *member.Config) {
		c.Gossip.Logger = slog.New(slog.NewTextHandler(logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}).Update(t, fedtest.CoffeeService("north", "pastry", 2, 18084))
	fedtest.Eventually(t, 10*time.Second, "north converged", func() bool { return tm.Converged("north") })
	startImpostor(t, tm, "central", "west")

	// The impostor keeps trying; each member counts every attempt and logs
	// the peer once.
	watchers := []string{"east", "central", "north"}
	fedtest.Eventually(t, 10*time.Second, "every member to refuse the impostor again and again", func() bool {
		for _, name := range watchers {
			if tm.Member(name).Member.GossipStats().ForeignClaims["central"] < 3 {
				return false
			}
		}
		return true
	})
	if got := logged.count(`claims another cluster's node`, `peer_id=spiffe://shop/cluster/central`); got != 1 {
		t.Errorf("north logged central's claims %d times, want once", got)
	}
	east := newScraper(t, tm.Member("east").Member.Collector())
	if got := east.scrape()[`federate_gossip_foreign_claims_total{peer="central"}`]; got < 1 {
		t.Errorf("east's federate_gossip_foreign_claims_total for central is %v, want at least 1", got)
	}

	tm.StopMember("west")
	stopped := time.Now()
	// Stale at stale_after after the last heartbeat, give or take one
	// heartbeat and one maintenance tick; allow as much again for a busy
	// machine.
	limit := testTimers.StaleAfter + 2*gossip.DefaultHeartbeatInterval + 3*time.Second
	fedtest.Eventually(t, limit, "west stale at every member and the hub", func() bool {
		for _, name := range watchers {
			if st := stateIn(tm.Member(name).Member.StatusNow(), "west"); !gossip.Unhealthy(st) {
				return false
			}
		}
		st, err := tm.AdminRegistry().Status(fedtest.DeadlineContext(t, 5*time.Second), &hubpb.StatusRequest{})
		return err == nil && gossip.Unhealthy(stateIn(st, "west"))
	})
	t.Logf("west stale everywhere %s after it stopped (stale_after %s)", time.Since(stopped).Round(time.Millisecond), testTimers.StaleAfter)
	for _, name := range []string{"east", "north"} {
		if st := stateIn(tm.Member(name).Member.StatusNow(), "central"); st != gossip.StateAlive {
			t.Errorf("%s sees central, whose credential the impostor holds, %s; want alive", name, st)
		}
	}
}

// Removing a connected cluster closes its gossip connections at every
// member within 5 s, and its credential opens no new one.
func TestIntegrationRemovalClosesGossip(t *testing.T) {
	t.Parallel()
	tm := startCoffeeShop(t, nil)
	others := []string{"east", "west"}
	fedtest.Eventually(t, 10*time.Second, "gossip connections with central", func() bool {
		for _, name := range others {
			if tm.Member(name).Member.GossipStats().Open["central"] == 0 {
				return false
			}
		}
		return true
	})

	ctx := fedtest.DeadlineContext(t, 10*time.Second)
	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "central"}); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	refusedBefore := make(map[string]uint64)
	fedtest.Eventually(t, 5*time.Second, "central's gossip connections closed", func() bool {
		for _, name := range others {
			st := tm.Member(name).Member.GossipStats()
			if st.Open["central"] != 0 {
				return false
			}
			refusedBefore[name] = st.Closed[gossip.ClosedRevoked]
		}
		return true
	})
	t.Logf("central's gossip connections closed %s after its removal", time.Since(removed).Round(time.Millisecond))

	// central, still running, keeps trying: refused, and no connection
	// stays open.
	fedtest.Eventually(t, 5*time.Second, "central's new attempts refused", func() bool {
		for _, name := range others {
			if tm.Member(name).Member.GossipStats().Closed[gossip.ClosedRevoked] <= refusedBefore[name] {
				return false
			}
		}
		return true
	})
	// So is a connection opened by hand with central's credential.
	ms, err := membership.LoadMembership(filepath.Join(tm.Dir, "central"))
	if err != nil {
		t.Fatal(err)
	}
	c := dialGossip(t, tm.ClusterCredential(t, "central"), ms.CA, tm.Member("east").Member.GossipListenAddr())
	c.Write([]byte{'P', byte(len("central-1a2b3c"))})
	c.Write([]byte("central-1a2b3c"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("east kept a new gossip connection of removed central open: %v", err)
	}
	for _, name := range others {
		if open := tm.Member(name).Member.GossipStats().Open["central"]; open != 0 {
			t.Errorf("%s holds %d gossip connections of removed central", name, open)
		}
	}
}

func dialGossip(t *testing.T, cred *trust.Credential, ca []*x509.Certificate, addr string) *tls.Conn {
	t.Helper()
	td := cred.ID().TrustDomain()
	conf := tlsconfig.MTLSClientConfig(cred, trust.Bundle(td, ca...), tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(td.Name())))
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// claimLog collects log lines.
type claimLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *claimLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

// count returns how many lines hold every one of parts.
func (l *claimLog) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func isTimeout(err error) bool {
	t, ok := err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}
