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
