package member_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
)

// scraper serves one collector over HTTP, as a Prometheus server sees it.
type scraper struct {
	t   *testing.T
	url string
}

func newScraper(t *testing.T, c prometheus.Collector) *scraper {
	t.Helper()
	reg := prometheus.NewPedanticRegistry() // also checks Describe against Collect
	reg.MustRegister(c)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	t.Cleanup(srv.Close)
	return &scraper{t: t, url: srv.URL}
}

// scrape returns every sample by its series, e.g. `federate_services{cluster="east"}`.
func (s *scraper) scrape() map[string]float64 {
	s.t.Helper()
	resp, err := http.Get(s.url)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("scrape: %s", resp.Status)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			s.t.Fatalf("scrape: bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// value returns one series, failing the test if it is missing.
func (s *scraper) value(series string) float64 {
	s.t.Helper()
	got := s.scrape()
	v, ok := got[series]
	if !ok {
		s.t.Fatalf("scrape lacks %s", series)
	}
	return v
}

func (s *scraper) eventually(timeout time.Duration, what string, cond func(map[string]float64) bool) {
	s.t.Helper()
	fedtest.Eventually(s.t, timeout, what, func() bool { return cond(s.scrape()) })
}

// A control plane's and the hub's metrics follow the federation: states,
// versions, counts, expiries and the hub connection change as it does.
// West's clock skips ahead to stale_after rather than waiting for it.
func TestMetricsFollowTheFederation(t *testing.T) {
	t.Parallel()
	tm := newMesh(t, testTimers)
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	clock := new(skipClock)
	tm.Join("west")
	west := tm.StartMemberWith("west", func(c *member.Config) { c.Now = clock.Now })
	west.Update(t, fedtest.CoffeeService("west", "payment", 1, 18081))
	for _, c := range []string{"east", "west"} {
		fedtest.Eventually(t, 10*time.Second, c+" converged", func() bool { return tm.Converged(c) })
	}

	w := newScraper(t, west.Member.Collector())
	w.eventually(5*time.Second, "east alive with 2 endpoints in west's metrics", func(m map[string]float64) bool {
		return m[`federate_cluster_state{cluster="east",state="alive"}`] == 1 && m[`federate_endpoints{cluster="east"}`] == 2
	})
	got := w.scrape()
	for series, want := range map[string]float64{
		`federate_cluster_state{cluster="east",state="suspect"}`:        0,
		`federate_cluster_state{cluster="west",state="alive"}`:          1,
		`federate_services{cluster="east"}`:                             1,
		`federate_unhealthy_endpoints{cluster="east"}`:                  0,
		`federate_hub_connected`:                                        1,
		`federate_hub_replica{address="` + tm.HubAddr + `"}`:            1,
		`federate_hub_address{address="` + tm.HubAddr + `"}`:            1,
		`federate_gossip_members`:                                       3, // hub, east, west
		`federate_root_rotation_phase{phase="stable"}`:                  1,
		`federate_liveness_timer_seconds{timer="stale_after"}`:          testTimers.StaleAfter.Seconds(),
		`federate_certificate_expiry_timestamp_seconds{kind="cluster"}`: float64(west.Member.Credential().Expiry().Unix()),
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	for _, reason := range []string{"queue_full", "unreachable", "revoked"} {
		if _, ok := got[`federate_gossip_packets_dropped_total{reason="`+reason+`"}`]; !ok {
			t.Errorf("no federate_gossip_packets_dropped_total for reason %s", reason)
		}
	}
	if seq := got[`federate_bundle_sequence{trust_domain="east.shop"}`]; seq < 1 {
		t.Errorf("west holds east's bundle at sequence %v, want >= 1", seq)
	}
	if exp := got[`federate_bundle_expiry_timestamp_seconds{trust_domain="east.shop"}`]; exp < float64(time.Now().Add(24*time.Hour).Unix()) {
		t.Errorf("east's bundle expires at %v, want a root valid for more than a day", exp)
	}

	// An update raises east's slice version in west's view.
	before := w.value(`federate_slice_version{cluster="east"}`)
	east.Update(t, fedtest.CoffeeService("east", "order", 3, 18080))
	w.eventually(5*time.Second, "east's new version in west's metrics", func(m map[string]float64) bool {
		return m[`federate_slice_version{cluster="east"}`] > before && m[`federate_endpoints{cluster="east"}`] == 3
	})

	// The hub reports both clusters and both subscribers.
	h := newScraper(t, tm.Hub.Collector())
	h.eventually(5*time.Second, "both subscribers in the hub's metrics", func(m map[string]float64) bool {
		return m[`federate_hub_subscribers`] == 2 && m[`federate_cluster_state{cluster="east",state="alive"}`] == 1
	})
	hub := h.scrape()
	if v := hub[`federate_slice_version{cluster="east"}`]; v != w.value(`federate_slice_version{cluster="east"}`) {
		t.Errorf("the hub holds east at version %v, west at %v", v, w.value(`federate_slice_version{cluster="east"}`))
	}
	if exp := hub[`federate_certificate_expiry_timestamp_seconds{kind="hub"}`]; exp < float64(time.Now().Unix()) {
		t.Errorf("hub credential expiry %v is in the past", exp)
	}

	// A stopped cluster leaves alive, then goes stale with every endpoint
	// unhealthy; the lag grows meanwhile.
	tm.StopMember("east")
	w.eventually(5*time.Second, "east not alive in west's metrics", func(m map[string]float64) bool {
		return m[`federate_cluster_state{cluster="east",state="alive"}`] == 0
	})
	w.eventually(5*time.Second, "east stale in west's metrics", func(m map[string]float64) bool {
		clock.skipUnconfirmed(west.Member, "east", testTimers.StaleAfter)
		return m[`federate_cluster_state{cluster="east",state="stale"}`] == 1 &&
			m[`federate_unhealthy_endpoints{cluster="east"}`] == 3 &&
			m[`federate_sync_lag_seconds{cluster="east"}`] >= testTimers.StaleAfter.Seconds()
	})

	// Without the hub, west says so.
	tm.StopHub()
	w.eventually(5*time.Second, "hub disconnected in west's metrics", func(m map[string]float64) bool {
		_, replica := m[`federate_hub_replica{address="`+tm.HubAddr+`"}`]
		return m[`federate_hub_connected`] == 0 && !replica
	})
}
