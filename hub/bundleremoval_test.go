package hub_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/trust"
)

// The bundle endpoint, which partners outside the federation (SPIRE)
// poll without a client certificate, stops serving a removed cluster's
// bundle, so that they stop trusting its workloads too; and it answers
// requests that name no member's trust domain with an error, not a bundle.
func TestIntegrationBundleEndpointDropsRemovedClusters(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) { c.BundleListen = "127.0.0.1:0" })
	tm.AddCluster("east").Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	tm.AddCluster("central").Update(t, fedtest.CoffeeService("central", "inventory", 1, 18082))
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	mesh := spiffeid.RequireTrustDomainFromString("shop")
	hubID := spiffeid.RequireFromPath(mesh, "/hub")
	hubBundle := trust.Bundle(mesh, tm.HubCA(t))
	eastTD, centralTD := spiffeid.RequireTrustDomainFromString("east.shop"), spiffeid.RequireTrustDomainFromString("central.shop")
	fetch := func(td spiffeid.TrustDomain) error {
		_, err := federation.FetchBundle(ctx, td, "https://"+tm.Hub.BundleAddr()+hub.BundlePath(td), federation.WithSPIFFEAuth(hubBundle, hubID))
		return err
	}
	for _, td := range []spiffeid.TrustDomain{eastTD, centralTD} {
		fedtest.EventuallyNil(t, 10*time.Second, "the endpoint serves "+td.Name(), func() error { return fetch(td) })
	}

	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "central"}); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.TLSClientConfig(hubBundle, tlsconfig.AuthorizeID(hubID)),
	}}
	t.Cleanup(client.CloseIdleConnections)
	base := "https://" + tm.Hub.BundleAddr()
	get := func(method, path string, header http.Header) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %.40s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return resp.StatusCode, string(body)
	}
	// The status says it: go-spiffe's FetchBundle reads any body as JWKS.
	fedtest.Eventually(t, 10*time.Second, "the endpoint stops serving central's bundle", func() bool {
		code, _ := get(http.MethodGet, hub.BundlePath(centralTD), nil)
		return code == http.StatusNotFound
	})
	if err := fetch(eastTD); err != nil {
		t.Fatalf("east's bundle after central's removal: %v", err)
	}

	// Requests that name no member.
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/central.shop", http.StatusNotFound},
		{http.MethodGet, "/no.such.domain", http.StatusNotFound},
		{http.MethodGet, "/EAST.SHOP", http.StatusNotFound},
		{http.MethodGet, "/east.shop/../central.shop", http.StatusNotFound},
		{http.MethodGet, "/east.shop%2F..%2Fcentral.shop", http.StatusNotFound},
		{http.MethodGet, "/" + strings.Repeat("a", 4<<10), http.StatusNotFound},
		{http.MethodPost, "/east.shop", http.StatusMethodNotAllowed},
	} {
		if code, body := get(tc.method, tc.path, nil); code != tc.want || strings.Contains(body, "keys") {
			t.Errorf("%s %.40s: status %d (%.80q), want %d and no bundle", tc.method, tc.path, code, body, tc.want)
		}
	}
	// Headers larger than any request needs are refused, not read.
	if code, _ := get(http.MethodGet, "/east.shop", http.Header{"X-Filler": {strings.Repeat("x", 2<<20)}}); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 2 MiB header: status %d, want %d", code, http.StatusRequestHeaderFieldsTooLarge)
	}
}
