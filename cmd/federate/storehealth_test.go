package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
)

// 'federate status' shows a failing hub store, in the table and in JSON.
func TestStatusShowsStoreFailure(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &hubpb.StatusResponse{Mesh: "shop", Store: &hubpb.StoreHealth{
		Error: "store: write store /var/lib/hub/hub.db: no space left on device", FailingSince: since.Unix(), WriteFailures: 3,
	}}
	var table bytes.Buffer
	writeStatusTable(&table, st, since.Add(time.Minute))
	for _, want := range []string{"warning: the hub's store writes fail since 2026-01-02T03:04:05Z (3 failures)", "no space left on device", "free space on its disk"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, table.String())
		}
	}
	var js bytes.Buffer
	if err := writeStatusJSON(&js, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"writeFailures": 3`, `"failingSince": "2026-01-02T03:04:05Z"`, `no space left on device`} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("status JSON lacks %s:\n%s", want, js.String())
		}
	}
	st.Store = &hubpb.StoreHealth{}
	table.Reset()
	writeStatusTable(&table, st, since)
	if strings.Contains(table.String(), "store") {
		t.Errorf("status of a healthy store warns:\n%s", table.String())
	}
}
