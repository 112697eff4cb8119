package member

import (
	"context"
	"crypto/x509"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/protobuf/proto"
)

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (m *Member) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the next change of the view.
func (m *Member) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// Fetch serves our records to peers.
func (m *Member) Fetch(ctx context.Context, req *hubpb.FetchRequest) (*hubpb.FetchResponse, error) {
	if _, err := membership.Identify(ctx, m.td, m.verifier); err != nil {
		return nil, err
	}
	return m.serveFetch(req), nil
}

// Status reports every cluster as this member sees it.
func (m *Member) Status(ctx context.Context, _ *hubpb.StatusRequest) (*hubpb.StatusResponse, error) {
	if _, err := membership.Identify(ctx, m.td, m.verifier); err != nil {
		return nil, err
	}
	return m.StatusNow(), nil
}

// StatusNow is Status without the call.
func (m *Member) StatusNow() *hubpb.StatusResponse {
	st := gossip.BuildStatus(m.cfg.Mesh, m.cfg.Cluster, m.set, m.live, m.gossip.Members(), m.cfg.Now())
	if m.cfg.PolicyWarnings != nil {
		st.PolicyWarnings = m.cfg.PolicyWarnings()
	}
	st.External = m.externalStatus()
	m.addImportStatus(st)
	return st
}

// Services returns a cluster's services as this member would route to
// them: endpoints of a stale or dead cluster are marked unhealthy.
func (m *Member) Services(cluster string) []*registry.Service {
	svcs := m.set.Services(cluster)
	if cluster == m.cfg.Cluster {
		return svcs
	}
	if st, _ := m.live.State(cluster, m.cfg.Now()); !gossip.Unhealthy(st) {
		return svcs
	}
	out := make([]*registry.Service, len(svcs))
	for i, s := range svcs {
		c := proto.Clone(s).(*registry.Service)
		for _, ep := range c.Endpoints {
			ep.Health = registrypb.Health_UNHEALTHY
		}
		out[i] = c
	}
	return out
}

// Clusters returns the names of every cluster with a slice.
func (m *Member) Clusters() []string { return m.set.Clusters() }

// Version returns the newest version held for a cluster.
func (m *Member) Version(cluster string) *registry.Version { return m.set.Version(cluster) }

// Cluster returns this member's cluster name.
func (m *Member) Cluster() string { return m.cfg.Cluster }

// Mesh returns the federation's name.
func (m *Member) Mesh() string { return m.cfg.Mesh }

// MeshCA returns the hub CA certificates every member credential chains to.
func (m *Member) MeshCA() []*x509.Certificate { return m.cfg.CA }

// Summaries describes every slice held, sorted by cluster.
func (m *Member) Summaries() []registry.Summary { return m.set.Summaries() }

// ClusterDown reports whether a cluster is stale or dead by gossip, so
// that its endpoints get no traffic.
func (m *Member) ClusterDown(cluster string) bool {
	st, _ := m.live.State(cluster, m.cfg.Now())
	return gossip.Unhealthy(st)
}

// Touch wakes everything waiting on Changed without changing the view:
// for a change of policy that the view's watchers also follow.
func (m *Member) Touch() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.notifyLocked()
}

// HubStreamSynced reports whether the member's stream from the hub (any
// replica) is open and has sent everything the hub held when it opened.
func (m *Member) HubStreamSynced() bool { return m.hubConnected() }
