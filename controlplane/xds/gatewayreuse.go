package xds

import (
	"sort"
	"sync"

	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
)

// GatewayReuse carries the per-service resources of one gateway build to
// the next (Input.Reuse), as Reuse does for the clients: a service is
// rendered again only when its message, its subsets or the policies its
// build read changed. The listener, which holds every service's filter
// chain, is assembled again from the chains each time. Its zero value is
// ready; it is safe for concurrent use.
type GatewayReuse struct {
	mu       sync.Mutex
	gateway  clientKey // the gateway all builds were for
	services map[string]*builtService
	kept     map[string]*builtService // services of the build under way
}

// builtService is what one service's gateway build read and rendered.
type builtService struct {
	service  *registry.Service
	subsets  []Subset
	policies []policyRead

	chains              []*listenerpb.FilterChain
	clusters, endpoints []types.Resource
}

func (r *GatewayReuse) startLocked(in Input) {
	if r.kept != nil {
		r.services = r.kept
	}
	gateway := clientKey{in.Locality, in.Network, in.Cluster}
	if r.gateway != gateway {
		r.gateway, r.services = gateway, nil
	}
	r.kept = make(map[string]*builtService, len(r.services))
}

// lookupLocked returns the service's previous build if nothing it read
// has changed, else nil. A nil GatewayReuse has nothing.
func (r *GatewayReuse) lookupLocked(in Input, svc *registry.Service) *builtService {
	if r == nil {
		return nil
	}
	host := svc.GetHostname()
	b := r.services[host]
	if b == nil || b.service != svc || !sameSubsets(b.subsets, in.Subsets[host]) {
		return nil
	}
	for _, p := range b.policies {
		if !samePolicy(gatewayPolicy(in, host, p.subset, p.port), p.policy) {
			return nil
		}
	}
	return b
}

func (r *GatewayReuse) keepLocked(host string, b *builtService) {
	if r != nil {
		r.kept[host] = b
	}
}

func gatewayPolicy(in Input, host, subset string, port uint32) locality.Policy {
	if in.Policy != nil {
		return in.Policy(host, subset, port)
	}
	return GatewayPolicy()
}

// buildService renders one service's filter chains, clusters and
// endpoints on the gateway, and validates the clusters and endpoints.
func buildService(in Input, svc *registry.Service) (*builtService, error) {
	host := svc.GetHostname()
	b := &builtService{service: svc, subsets: in.Subsets[host]}
	ports := append([]*registry.Port(nil), svc.GetPorts()...)
	sort.Slice(ports, func(i, j int) bool { return ports[i].GetNumber() < ports[j].GetNumber() })
	subsets := append([]Subset{{}}, in.Subsets[host]...)
	client := locality.Client{Locality: in.Locality, Network: in.Network, Cluster: in.Cluster}
	for _, p := range ports {
		for _, sub := range subsets {
			name := ClusterName(p.GetNumber(), sub.Name, host)
			chain, err := filterChain(name)
			if err != nil {
				return nil, err
			}
			policy := gatewayPolicy(in, host, sub.Name, p.GetNumber())
			b.policies = append(b.policies, policyRead{subset: sub.Name, port: p.GetNumber(), policy: policy})
			c := cluster(name)
			ApplyLocalityPolicy(c, policy)
			cla, err := LoadAssignment(name, locality.Assign(policy, client, ownEndpoints(in.Network, in.Cluster, svc, p, sub)))
			if err != nil {
				return nil, err
			}
			b.chains = append(b.chains, chain)
			b.clusters = append(b.clusters, c)
			b.endpoints = append(b.endpoints, cla)
		}
	}
	if err := validateAll(append(append([]types.Resource(nil), b.clusters...), b.endpoints...)); err != nil {
		return nil, err
	}
	return b, nil
}
