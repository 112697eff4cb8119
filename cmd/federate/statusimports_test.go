package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
)

// Status lists the imports of each scoped cluster, pending ones included,
// in the table and in JSON; a cluster importing everything is not listed.
func TestStatusShowsImports(t *testing.T) {
	t.Parallel()
	st := &hubpb.StatusResponse{Mesh: "shop", Clusters: []*hubpb.ClusterStatus{
		{Name: "importer", State: "alive", Imports: []*hubpb.Import{
			{Host: "order.shop.svc.cluster.local", State: "imported", From: []string{"central", "east"}},
			{Host: "reviews.shop.svc.cluster.local", State: "pending"},
		}},
		{Name: "everything", State: "alive", ImportsAll: true},
	}}
	var table bytes.Buffer
	writeStatusTable(&table, st, time.Now())
	for _, want := range []string{
		`(?m)^CLUSTER\s+IMPORTS\s+STATE\s+FROM$`,
		`(?m)^importer\s+order\.shop\.svc\.cluster\.local\s+imported\s+central,east$`,
		`(?m)^importer\s+reviews\.shop\.svc\.cluster\.local\s+pending\s+-$`,
	} {
		if !regexp.MustCompile(want).MatchString(table.String()) {
			t.Errorf("table lacks %s:\n%s", want, table.String())
		}
	}
	if regexp.MustCompile(`(?m)^everything\s+\S+\.local`).MatchString(table.String()) {
		t.Errorf("table lists imports of the cluster that imports everything:\n%s", table.String())
	}
	var js bytes.Buffer
	if err := writeStatusJSON(&js, st); err != nil {
		t.Fatal(err)
	}
	var got statusJSON
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	imps := got.Clusters[0].Imports
	if len(imps) != 2 || imps[1].State != "pending" || len(imps[0].From) != 2 || !got.Clusters[1].ImportsAll {
		t.Errorf("JSON imports %+v, everything %+v", got.Clusters[0], got.Clusters[1])
	}
}
