package gossip

import (
	"net"
	"strconv"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BuildStatus describes every slice in set as seen at now.
func BuildStatus(mesh, self string, set *registry.Set, live *Liveness, members []MemberState, now time.Time) *hubpb.StatusResponse {
	digests := make(map[string]Digest)
	for _, m := range members {
		if m.Cluster != "" {
			digests[m.Cluster] = m.Digest
		}
	}
	resp := &hubpb.StatusResponse{
		Mesh:          mesh,
		StaleAfterMs:  live.Timers().StaleAfter.Milliseconds(),
		DeadAfterMs:   live.Timers().DeadAfter.Milliseconds(),
		ExpireAfterMs: live.Timers().ExpireAfter.Milliseconds(),
	}
	for _, sum := range set.Summaries() {
		state, last := live.State(sum.Cluster, now)
		if sum.Cluster == self {
			state, last = StateAlive, now
		}
		cs := &hubpb.ClusterStatus{
			Name:         sum.Cluster,
			State:        state,
			SliceVersion: sum.Version,
			Services:     int32(sum.Services),
			Endpoints:    int32(sum.Endpoints),
			LastSeen:     last.UnixMilli(),
			LagMs:        max(0, sum.Applied.Sub(sum.SignedAt).Milliseconds()),
		}
		if Unhealthy(state) {
			cs.UnhealthyEndpoints = cs.Endpoints
		}
		if info := sum.Info; info != nil {
			cs.Network = info.GetNetwork()
			cs.Locality = registry.FormatLocality(info.GetLocality())
			cs.TrustDomain = info.GetTrustDomain()
			cs.BundleSequence = info.GetBundleSequence()
			cs.RotationPhase = info.GetRotationPhase()
			cs.ApiAddress = info.GetApiAddress()
			cs.RootExpiry = rootExpiry(info)
			if gws := info.GetGateways(); len(gws) > 0 {
				cs.Gateway = net.JoinHostPort(gws[0].GetAddress(), strconv.FormatUint(uint64(gws[0].GetPort()), 10))
			}
		}
		if d, ok := digests[sum.Cluster]; ok && d.Gateway != "" {
			cs.Gateway = d.Gateway
		}
		resp.Clusters = append(resp.Clusters, cs)
	}
	return resp
}

// rootExpiry returns the earliest root expiry in a cluster's bundle, in unix
// seconds, or 0 if it has none.
func rootExpiry(info *registry.ClusterInfo) int64 {
	td, err := spiffeid.TrustDomainFromString(info.GetTrustDomain())
	if err != nil || len(info.GetBundle()) == 0 {
		return 0
	}
	b, err := trust.ParseBundle(td, info.GetBundle())
	if err != nil {
		return 0
	}
	return trust.Expiry(b).Unix()
}
