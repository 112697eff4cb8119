package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
)

// Status shows each locality-policy warning with its rule, host and field,
// in the table and in JSON.
func TestStatusShowsPolicyWarnings(t *testing.T) {
	t.Parallel()
	st := &hubpb.StatusResponse{Mesh: "shop", PolicyWarnings: []*hubpb.PolicyWarning{
		{Rule: "shop/order", Host: "order.shop.svc.cluster.local", Field: "failover[0]", Message: `no endpoint is in region "mars"`},
		{Message: "gateway 10.0.0.1:15443 of cluster east misses its probes"},
	}}
	var table bytes.Buffer
	writeStatusTable(&table, st, time.Now())
	for _, want := range []string{
		`warning: DestinationRule shop/order (order.shop.svc.cluster.local): failover[0]: no endpoint is in region "mars"`,
		"warning: gateway 10.0.0.1:15443 of cluster east misses its probes",
	} {
		if !strings.Contains(table.String(), want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var js bytes.Buffer
	if err := writeStatusJSON(&js, st); err != nil {
		t.Fatal(err)
	}
	var got statusJSON
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.PolicyWarnings) != 2 || got.PolicyWarnings[0].Rule != "shop/order" || got.PolicyWarnings[0].Field != "failover[0]" {
		t.Errorf("JSON policy warnings %+v", got.PolicyWarnings)
	}
}

// Status lists each imported trust domain with its sequence, roots, last
// and next refresh, URL and error, in the table and in JSON.
func TestStatusShowsImportedTrustDomains(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	st := &hubpb.StatusResponse{Mesh: "shop", External: []*hubpb.ExternalTrustDomain{
		{TrustDomain: "partner.example", Url: "https://spire.partner.example:8443/", BundleSequence: 7, Roots: 2,
			LastRefresh: now.Add(-12 * time.Second).Unix(), NextRefresh: now.Add(48 * time.Second).Unix()},
		{TrustDomain: "billing.example", Url: "https://spire.billing.example/", BundleSequence: 3, Roots: 1,
			Error: "federation: could not GET bundle: connection refused"},
	}}
	var table bytes.Buffer
	writeStatusTable(&table, st, now)
	for _, want := range []string{
		"IMPORTED TRUST DOMAIN  BUNDLE  ROOTS  LAST REFRESH  NEXT REFRESH  URL",
		"partner.example        7       2      12s ago       in 48s        https://spire.partner.example:8443/  -",
		"billing.example        3       1      -             -             https://spire.billing.example/       federation: could not GET bundle: connection refused",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var js bytes.Buffer
	if err := writeStatusJSON(&js, st); err != nil {
		t.Fatal(err)
	}
	var got statusJSON
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := externalJSON{TrustDomain: "partner.example", URL: "https://spire.partner.example:8443/", BundleSequence: 7, Roots: 2,
		LastRefresh: "2027-01-15T07:59:48Z", NextRefresh: "2027-01-15T08:00:48Z"}
	if len(got.ExternalTrustDomains) != 2 || got.ExternalTrustDomains[0] != want || got.ExternalTrustDomains[1].Error == "" {
		t.Errorf("JSON imported trust domains %+v, want first %+v", got.ExternalTrustDomains, want)
	}
}
