package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
)

// --import-trust-domain takes the values docs/spire.md shows, and bad ones
// fail with what is wrong.
func TestImportTrustDomainFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	partner := fedtest.NewPartner(t, "spire.example")
	data, err := partner.Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "spire.example.bundle.json")
	if err := os.WriteFile(bundle, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var f externalFlag
	v := "td=spire.example,url=https://spire.example.com:8443/,endpoint-id=spiffe://spire.example/spire/server,bundle=" + bundle + ",refresh=15s"
	if err := f.Set(v); err != nil {
		t.Fatalf("Set(%q): %v", v, err)
	}
	got := f[0]
	if got.TrustDomain.Name() != "spire.example" || got.Profile != hub.ProfileHTTPSSPIFFE || got.EndpointID.String() != "spiffe://spire.example/spire/server" ||
		got.MaxRefresh != 15*time.Second || got.Bundle == nil {
		t.Errorf("parsed %+v", got)
	}
	for bad, want := range map[string]string{
		"td=spire.example,url=https://s/,profile=https_web,refresh=100ms": "below the 1s minimum",
		"td=spire.example,url=https://s/,profile=https_web,refresh=soon":  "refresh:",
		"td=spire.example,url=https://s/,profile=https_web,every=1m":      "want td, url, profile, endpoint-id, bundle, ca or refresh",
		"td=spire.example,url=https://s/":                                 "needs the endpoint's SPIFFE ID",
	} {
		if err := new(externalFlag).Set(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Set(%q) = %v, want an error with %q", bad, err, want)
		}
	}
}
