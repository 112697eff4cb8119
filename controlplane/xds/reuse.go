package xds

import (
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
)

// Reuse carries the resources of one build of a cluster's clients to the
// next (ClientsInput.Reuse), so that one changed service costs the
// rendering, validation and encoding of its own resources, not of the
// federation's. A host is rendered again when anything its resources were
// made from differs: the services of that hostname (compared as messages
// by identity: a registry view hands out the same message until its
// record changes), their clusters' info, whether a cluster is down, the
// host's subsets, the policies and the gateway states its build read.
// Its zero value is ready; it is safe for concurrent use.
type Reuse struct {
	mu     sync.Mutex
	client clientKey // the clients all builds were for
	hosts  map[string]*builtHost
	kept   map[string]*builtHost // hosts of the build under way
	views  map[string]*Reuse     // namespaces' views, by what they hide
	used   map[string]bool       // views asked for since the last build
}

// builtHost is what one host's build read and rendered.
type builtHost struct {
	sources  []sourceKey
	subsets  []Subset
	policies []policyRead
	gateways []gatewayRead

	listeners, clusters, endpoints []types.Resource
	priorities                     map[string]locality.Priorities
	warnings                       []ClientWarning
}

// clientKey is who a build is for: its clients' locality, network and
// cluster.
type clientKey struct {
	locality         locality.Locality
	network, cluster string
}

// sourceKey is one cluster's service of a host, as the build saw it.
type sourceKey struct {
	cluster string
	info    *registry.ClusterInfo
	service *registry.Service
	down    bool
}

type policyRead struct {
	subset string
	port   uint32
	policy locality.Policy
}

type gatewayRead struct {
	addr string
	down bool
}

// startLocked begins a build: the previous build's hosts are the ones to
// reuse, and a build for other clients reuses nothing.
func (r *Reuse) startLocked(in ClientsInput) {
	if r.kept != nil {
		r.hosts = r.kept
	}
	client := clientKey{in.Locality, in.Network, in.Cluster}
	if r.client != client {
		r.client, r.hosts = client, nil
	}
	r.kept = make(map[string]*builtHost, len(r.hosts))
	// Views nobody asked for since the last build are dropped.
	for hidden := range r.views {
		if !r.used[hidden] {
			delete(r.views, hidden)
		}
	}
	r.used = make(map[string]bool)
}

// lookupLocked returns the host's previous build if nothing it read has
// changed, else nil. A nil Reuse has nothing.
func (r *Reuse) lookupLocked(in ClientsInput, host string, h *hostSources) *builtHost {
	if r == nil {
		return nil
	}
	b := r.hosts[host]
	if b == nil || !slices.Equal(b.sources, h.keys) || !sameSubsets(b.subsets, in.Subsets[host]) {
		return nil
	}
	for _, p := range b.policies {
		policy := locality.DefaultPolicy()
		if in.Policy != nil {
			policy = in.Policy(host, p.subset, p.port)
		}
		if !samePolicy(policy, p.policy) {
			return nil
		}
	}
	for _, g := range b.gateways {
		if in.GatewayDown == nil || in.GatewayDown(g.addr) != g.down {
			return nil
		}
	}
	return b
}

// keepLocked records a host of the build under way.
func (r *Reuse) keepLocked(host string, b *builtHost) {
	if r != nil {
		r.kept[host] = b
	}
}

// view returns the Reuse of the namespaces' view that hides hidden.
func (r *Reuse) view(hidden string) *Reuse {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.views == nil {
		r.views = make(map[string]*Reuse)
	}
	if r.used == nil {
		r.used = make(map[string]bool)
	}
	v := r.views[hidden]
	if v == nil {
		v = &Reuse{}
		r.views[hidden] = v
	}
	r.used[hidden] = true
	return v
}

func sameSubsets(a, b []Subset) bool {
	return slices.EqualFunc(a, b, func(x, y Subset) bool {
		return x.Name == y.Name && maps.Equal(x.Labels, y.Labels)
	})
}

// samePolicy is reflect.DeepEqual for policies, without its cost for the
// common ones that configure no lists.
func samePolicy(a, b locality.Policy) bool {
	if len(a.Distribute)+len(a.Failover)+len(a.FailoverPriority)+len(b.Distribute)+len(b.Failover)+len(b.FailoverPriority) == 0 {
		return a.Disabled == b.Disabled && a.OutlierDetection == b.OutlierDetection && a.PanicThreshold == b.PanicThreshold &&
			(a.Distribute == nil) == (b.Distribute == nil) && (a.Failover == nil) == (b.Failover == nil) &&
			(a.FailoverPriority == nil) == (b.FailoverPriority == nil)
	}
	return reflect.DeepEqual(a, b)
}
