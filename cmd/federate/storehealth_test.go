package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/prometheus/client_golang/prometheus"
)

// /healthz fails, with the reason, while the hub's store writes fail, and
// answers ok again once they succeed.
func TestHealthzFailsWhileStoreFails(t *testing.T) {
	t.Parallel()
	ready := make(chan struct{})
	close(ready)
	var storeErr error
	h := metricsHandler(ready, func() error { return storeErr }, prometheus.NewRegistry())
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != http.StatusOK {
		t.Fatalf("/healthz of a healthy hub: %d %s", code, body)
	}
	storeErr = errors.New("hub: store writes fail since 2026-01-02T03:04:05Z (3 failures): no space left on device")
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "no space left on device") {
		t.Errorf("/healthz while the store fails: %d %q, want 503 with the reason", code, body)
	}
	storeErr = nil
	if code, _ := get(); code != http.StatusOK {
		t.Errorf("/healthz once writes succeed again: %d", code)
	}
}

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
