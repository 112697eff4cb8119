package eastwest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The Prometheus endpoint reports refusals by reason and the connection
// counters, as a scrape sees them.
func TestMetricsExposition(t *testing.T) {
	gw := startGateway(t, Config{Router: staticRouter{}})
	c := dialTCP(t, gw.addr)
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // not TLS
	expectClosed(t, c)
	eventually(t, "the refusal counted", func() bool { return gw.Stats().Refused[RefusedNotTLS] == 1 })

	reg := prometheus.NewRegistry()
	reg.MustRegister(gw.Collector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`federate_gateway_connections_refused_total{reason="not_tls"} 1`,
		`federate_gateway_connections_refused_total{reason="unknown_sni"} 0`,
		`federate_gateway_connections_accepted_total 1`,
		`federate_gateway_bytes_total{direction="to_upstream"} 0`,
		`federate_gateway_upstream_connect_failures_total 0`,
		`federate_gateway_accept_backoffs_total 0`,
		`federate_gateway_accept_paused 0`,
		`federate_gateway_directions_parked 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
}

// Stats in JSON, as the gateway's /stats serves them, name the refusal
// reasons, and decode back to the same Stats.
func TestStatsJSONNamesRefusals(t *testing.T) {
	gw := startGateway(t, Config{Router: staticRouter{}})
	c := dialTCP(t, gw.addr)
	_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
	expectClosed(t, c)
	eventually(t, "the refusal counted", func() bool { return gw.Stats().Refused[RefusedNotTLS] == 1 })

	st := gw.Stats()
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"not_tls":1`, `"no_data":0`, `"fd_limit":0`, `"AcceptPaused":false`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/stats lacks %s: %s", want, raw)
		}
	}
	var back Stats
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("decoded %+v, want %+v", back, st)
	}
	var r Refusal
	if err := r.UnmarshalText([]byte("7")); err == nil {
		t.Error("a number parsed as a refusal reason")
	}
}
