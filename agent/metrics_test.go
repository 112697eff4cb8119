package agent

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/federate/federate/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// gather returns each metric's value by name.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	return out
}

// The agent's metrics follow its saved SVID, its registration and its
// probe's latest result.
func TestAgentMetrics(t *testing.T) {
	dir := t.TempDir()
	a := New(Config{StateDir: dir})
	registered := false
	c := a.Collector(func() bool { return registered })

	got := gather(t, c)
	if _, ok := got["federate_agent_svid_expiry_timestamp_seconds"]; ok {
		t.Error("an SVID expiry is reported before the agent holds an SVID")
	}
	if _, ok := got["federate_agent_probe_healthy"]; ok {
		t.Error("probe health is reported before the first probe")
	}
	if got["federate_agent_registered"] != 0 {
		t.Errorf("registered = %v before registration", got["federate_agent_registered"])
	}

	td := spiffeid.RequireTrustDomainFromString("east.shop")
	ca, err := trust.NewAuthority(td, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := ca.IssueCredential(spiffeid.RequireFromPath(td, "/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := cred.Save(filepath.Join(dir, SVIDFile)); err != nil {
		t.Fatal(err)
	}
	registered = true
	a.health.set(false, "connection refused")
	got = gather(t, c)
	if want := float64(cred.Expiry().Unix()); got["federate_agent_svid_expiry_timestamp_seconds"] != want {
		t.Errorf("SVID expiry = %v, want %v", got["federate_agent_svid_expiry_timestamp_seconds"], want)
	}
	if got["federate_agent_registered"] != 1 {
		t.Errorf("registered = %v after registration", got["federate_agent_registered"])
	}
	if v, ok := got["federate_agent_probe_healthy"]; !ok || v != 0 {
		t.Errorf("probe healthy = %v (reported %v) after a failed probe", v, ok)
	}
	a.health.set(true, "")
	if got := gather(t, c)["federate_agent_probe_healthy"]; got != 1 {
		t.Errorf("probe healthy = %v after a passing probe", got)
	}
}
