package membership

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// hubsScheme is the gRPC resolver scheme of a list of hub replicas.
const hubsScheme = "federate-hubs"

// HubAddrs splits a hub address, one host:port or several separated by
// commas (every replica's), into its addresses.
func HubAddrs(hub string) []string {
	var out []string
	for a := range strings.SplitSeq(hub, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// NewHubClient connects to a hub given as one address or a list of
// replicas. With a list, the connection uses the first replica that
// answers, and when that one fails moves on to the next at once (gRPC's
// pick_first over every address): a stream that breaks resumes on
// another replica.
func NewHubClient(hub string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	addrs := HubAddrs(hub)
	if len(addrs) <= 1 {
		return grpc.NewClient(strings.TrimSpace(hub), opts...)
	}
	r := manual.NewBuilderWithScheme(hubsScheme)
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	return grpc.NewClient(hubsScheme+":///hub", append(opts, grpc.WithResolvers(r))...)
}
