package xdsclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxypb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/locality"
)

// Table is what a gateway routes by: for each SNI it accepts, the
// addresses of the healthy (or not yet probed) endpoints behind it, best
// priority first, and a picker that spreads connections over them by
// priority load and weights, as Envoy would.
type Table struct {
	Version string
	Routes  map[string][]string
	Pickers map[string]*locality.Picker
}

// Lookup returns the upstream addresses for an SNI; false means the SNI is
// not exported here and must be refused.
func (t *Table) Lookup(sni string) ([]string, bool) {
	if t == nil {
		return nil, false
	}
	addrs, ok := t.Routes[sni]
	return addrs, ok
}

// ClientConfig configures a gateway's ADS client.
type ClientConfig struct {
	// Conn is a connection to the control plane (mTLS with the gateway's SVID).
	Conn   *grpc.ClientConn
	NodeID string
	// OnUpdate receives every new table; it must not block for long.
	OnUpdate func(*Table)
	Logger   *slog.Logger
}

// Client follows the control plane's gateway configuration over ADS. A
// configuration that does not validate is NACKed and the last good table
// stays in force; a lost stream is resumed with backoff, keeping the table.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
}

// NewClient returns a client; it does no I/O.
func NewClient(cfg ClientConfig) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{cfg: cfg, log: cfg.Logger.With("component", "xds-client")}
}

// A control plane that refuses the gateway's credential (a credential of
// another cluster, or of a cluster removed from the federation) will not
// change its mind soon: the client tries again every refusedRetry, and
// says so once every refusedRelog.
const (
	refusedRetry = 30 * time.Second
	refusedRelog = 10 * time.Minute
)

// Run follows the configuration until ctx is done.
func (c *Client) Run(ctx context.Context) error {
	// Jittered: every gateway of a cluster loses its stream when the
	// control plane restarts.
	backoff := retry.New(100*time.Millisecond, 5*time.Second)
	var refusedLogged time.Time
	for {
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if status.Code(err) == codes.PermissionDenied {
			if refusedLogged.IsZero() || time.Since(refusedLogged) >= refusedRelog {
				refusedLogged = time.Now()
				c.log.Error("the control plane refuses this gateway's credential; keeping the last configuration and trying again every 30s: check that the gateway's --credential is the gateway.pem its own cluster's control plane wrote",
					"err", err)
			}
			if !retry.Sleep(ctx, refusedRetry, nil) {
				return nil
			}
			continue
		}
		refusedLogged = time.Time{}
		wait := backoff.Next()
		c.log.Warn("xDS stream ended; keeping the last configuration and reconnecting", "retry_in", wait, "err", err)
		if !retry.Sleep(ctx, wait, nil) {
			return nil
		}
	}
}

// state is one stream's view of the three resource types.
type state struct {
	chains   map[string]string                            // SNI -> cluster
	clusters []string                                     // cluster names, sorted
	cds      map[string]*clusterpb.Cluster                // by name
	cla      map[string]*endpointpb.ClusterLoadAssignment // by cluster name
	versions map[string]string                            // type -> accepted version
	nonces   map[string]string                            // type -> last nonce
	got      map[string]bool
	last     *Table // the table made last, for clusters still warming
}

func newState() *state {
	return &state{versions: map[string]string{}, nonces: map[string]string{}, got: map[string]bool{}, cla: map[string]*endpointpb.ClusterLoadAssignment{}}
}

func (c *Client) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(c.cfg.Conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	// A stream the control plane ended says io.EOF to a Send; Recv says
	// why (a refused credential, say).
	send := func(req *discoverypb.DiscoveryRequest) error {
		err := stream.Send(req)
		if errors.Is(err, io.EOF) {
			_, err = stream.Recv()
		}
		return err
	}
	node := &corepb.Node{Id: c.cfg.NodeID}
	st := newState()
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			return err
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		req := &discoverypb.DiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}
		if err := st.apply(resp); err != nil {
			c.log.Warn("rejecting xDS configuration; keeping the last good one", "type", typ, "version", resp.GetVersionInfo(), "err", err)
			req.VersionInfo = st.versions[typ]
			req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: err.Error()}
		} else {
			st.versions[typ] = resp.GetVersionInfo()
			req.VersionInfo = resp.GetVersionInfo()
		}
		st.nonces[typ] = resp.GetNonce()
		if typ == resourcev3.EndpointType {
			req.ResourceNames = st.clusters
		}
		if err := send(req); err != nil {
			return err
		}
		// A new set of clusters needs their endpoints.
		if typ == resourcev3.ClusterType && req.ErrorDetail == nil {
			eds := &discoverypb.DiscoveryRequest{
				TypeUrl: resourcev3.EndpointType, ResourceNames: st.clusters,
				VersionInfo: st.versions[resourcev3.EndpointType], ResponseNonce: st.nonces[resourcev3.EndpointType],
			}
			if err := send(eds); err != nil {
				return err
			}
		}
		if st.got[resourcev3.ListenerType] && st.got[resourcev3.ClusterType] && st.got[resourcev3.EndpointType] && req.ErrorDetail == nil {
			c.cfg.OnUpdate(st.table())
		}
	}
}

// apply validates and takes in one response, all or nothing.
func (st *state) apply(resp *discoverypb.DiscoveryResponse) error {
	var msgs []proto.Message
	for _, a := range resp.GetResources() {
		m, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
		if err != nil {
			return err
		}
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return err
			}
		}
		msgs = append(msgs, m)
	}
	switch resp.GetTypeUrl() {
	case resourcev3.ListenerType:
		chains := map[string]string{}
		for _, m := range msgs {
			lis, ok := m.(*listenerpb.Listener)
			if !ok {
				return fmt.Errorf("unexpected %T in LDS", m)
			}
			for _, fc := range lis.GetFilterChains() {
				cluster, err := tcpProxyCluster(fc)
				if err != nil {
					return err
				}
				for _, sni := range fc.GetFilterChainMatch().GetServerNames() {
					chains[sni] = cluster
				}
			}
		}
		st.chains = chains
	case resourcev3.ClusterType:
		var names []string
		cds := map[string]*clusterpb.Cluster{}
		for _, m := range msgs {
			c, ok := m.(*clusterpb.Cluster)
			if !ok {
				return fmt.Errorf("unexpected %T in CDS", m)
			}
			names = append(names, c.GetName())
			cds[c.GetName()] = c
		}
		sort.Strings(names)
		st.clusters, st.cds = names, cds
	case resourcev3.EndpointType:
		clas := map[string]*endpointpb.ClusterLoadAssignment{}
		for _, m := range msgs {
			cla, ok := m.(*endpointpb.ClusterLoadAssignment)
			if !ok {
				return fmt.Errorf("unexpected %T in EDS", m)
			}
			clas[cla.GetClusterName()] = cla
		}
		maps.Copy(st.cla, clas)
	default:
		return fmt.Errorf("unexpected type %s", resp.GetTypeUrl())
	}
	st.got[resp.GetTypeUrl()] = true
	return nil
}

func tcpProxyCluster(fc *listenerpb.FilterChain) (string, error) {
	for _, f := range fc.GetFilters() {
		tp := new(tcpproxypb.TcpProxy)
		if f.GetTypedConfig().MessageIs(tp) {
			if err := f.GetTypedConfig().UnmarshalTo(tp); err != nil {
				return "", err
			}
			if tp.GetCluster() == "" {
				return "", errors.New("tcp_proxy without a cluster")
			}
			return tp.GetCluster(), nil
		}
	}
	return "", fmt.Errorf("filter chain %q has no tcp_proxy", fc.GetName())
}

// usable lists the endpoints that may receive connections, by priority.
func usable(cla *endpointpb.ClusterLoadAssignment) []string {
	groups := slices.Clone(cla.GetEndpoints())
	slices.SortStableFunc(groups, func(a, b *endpointpb.LocalityLbEndpoints) int { return cmp.Compare(a.GetPriority(), b.GetPriority()) })
	var out []string
	for _, loc := range groups {
		for _, ep := range loc.GetLbEndpoints() {
			switch ep.GetHealthStatus() {
			case corepb.HealthStatus_HEALTHY, corepb.HealthStatus_UNKNOWN:
			default:
				continue
			}
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)))
		}
	}
	return out
}

func (st *state) table() *Table {
	t := &Table{
		Version: st.versions[resourcev3.ListenerType] + "/" + st.versions[resourcev3.EndpointType],
		Routes:  map[string][]string{}, Pickers: map[string]*locality.Picker{},
	}
	pickers := map[string]*locality.Picker{}
	for sni, cluster := range st.chains {
		cla := st.cla[cluster]
		if cla == nil {
			// A cluster whose endpoints have not come yet is warming, as
			// in Envoy: its SNI keeps the route it had, or stays unknown
			// until they come, rather than routed to no endpoint at all.
			if addrs, ok := st.last.Lookup(sni); ok {
				t.Routes[sni], t.Pickers[sni] = addrs, st.last.Pickers[sni]
			}
			continue
		}
		t.Routes[sni] = usable(cla)
		pk, ok := pickers[cluster]
		if !ok {
			pk = locality.NewPicker(PrioritiesFrom(st.cds[cluster], cla))
			pickers[cluster] = pk
		}
		t.Pickers[sni] = pk
	}
	st.last = t
	return t
}

// Decode is the table a gateway makes of these responses, in order: what
// it would route after receiving them.
func Decode(responses ...*discoverypb.DiscoveryResponse) (*Table, error) {
	st := newState()
	for _, resp := range responses {
		if err := st.apply(resp); err != nil {
			return nil, fmt.Errorf("xdsclient: apply %s: %w", resp.GetTypeUrl(), err)
		}
	}
	return st.table(), nil
}
