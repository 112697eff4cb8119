package xds

import (
	"context"
	"slices"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// seen is one response as a test client saw it: the names of the
// resources it carried and, for delta, the names it removed.
type seen struct {
	names   []string
	removed []string
	version string
}

// watcher is a test ADS client of one type that acknowledges every
// response and hands it on.
type watcher struct {
	t       testing.TB
	updates chan seen
}

// next returns the next seen, failing the test after 10 s.
func (w *watcher) next() seen {
	w.t.Helper()
	select {
	case u, ok := <-w.updates:
		if !ok {
			w.t.Fatal("the stream ended")
		}
		return u
	case <-time.After(10 * time.Second):
		w.t.Fatal("no seen within 10s")
	}
	return seen{}
}

// watchSotW opens a state-of-the-world stream for typ, naming names (none:
// a wildcard request), as node.
func watchSotW(t testing.TB, ctx context.Context, conn grpc.ClientConnInterface, node, typ string, names []string) *watcher {
	t.Helper()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: typ, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	w := &watcher{t: t, updates: make(chan seen, 16)}
	go func() {
		defer close(w.updates)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			w.updates <- seen{names: resourceNames(t, resp.GetResources()), version: resp.GetVersionInfo()}
			err = stream.Send(&discoverypb.DiscoveryRequest{TypeUrl: typ, ResourceNames: names,
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
			if err != nil {
				return
			}
		}
	}()
	return w
}

// watchDelta opens an incremental stream for typ, subscribing to names
// (none: a wildcard subscription), as node.
func watchDelta(t testing.TB, ctx context.Context, conn grpc.ClientConnInterface, node, typ string, names []string) *watcher {
	t.Helper()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverypb.DeltaDiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: typ, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	w := &watcher{t: t, updates: make(chan seen, 16)}
	go func() {
		defer close(w.updates)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			var got []string
			for _, r := range resp.GetResources() {
				got = append(got, r.GetName())
			}
			slices.Sort(got)
			removed := slices.Sorted(slices.Values(resp.GetRemovedResources()))
			w.updates <- seen{names: got, removed: removed, version: resp.GetSystemVersionInfo()}
			if err := stream.Send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
				return
			}
		}
	}()
	return w
}

// resourceNames lists the names of the resources in a response, sorted.
func resourceNames(t testing.TB, resources []*anypb.Any) []string {
	var out []string
	for _, a := range resources {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Error(err)
			continue
		}
		out = append(out, cachev3.GetResourceName(m.(types.Resource)))
	}
	slices.Sort(out)
	return out
}
