package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
)

// /livez answers while the process runs, whatever the control plane;
// /healthz/ready waits for the first routes.
func TestLivenessIsApartFromReadiness(t *testing.T) {
	routes := &xdsclient.Routes{}
	gw, err := eastwest.New(eastwest.Config{Router: routes, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := healthHandler(routes, gw)
	code := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if got := code("/livez"); got != http.StatusOK {
		t.Errorf("/livez of a gateway without routes: %d, want 200", got)
	}
	if got := code("/healthz/ready"); got != http.StatusServiceUnavailable {
		t.Errorf("/healthz/ready without routes: %d, want 503", got)
	}
	routes.Set(&xdsclient.Table{})
	if got := code("/healthz/ready"); got != http.StatusOK {
		t.Errorf("/healthz/ready with routes: %d, want 200", got)
	}
}
