package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	grpcxds "google.golang.org/grpc/xds"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/internal/fedtest"
)

// The bootstrap 'federate xds bootstrap' writes is one grpc-go accepts,
// names the control plane and the client node the authorizer expects, and
// points the certificate provider the clusters name at the SVID files.
func TestXDSBootstrapIsWhatGRPCReads(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "bootstrap.json")
	runOK(t, "xds", "bootstrap", "--control-plane", "controlplane.west.federate.internal:15443",
		"--namespace", "shop", "--name", "client", "--ip", "10.0.0.7", "--svid-dir", "/run/svid", "-o", out)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := fedtest.ProxylessBootstrapConfig("controlplane.west.federate.internal:15443", "shop", "client", "10.0.0.7", "/run/svid", xds.DefaultRefreshInterval).JSON()
	if err != nil {
		t.Fatal(err)
	}
	// The in-process tests' clients use fedtest's bootstrap: it must be
	// this command's.
	if string(data) != string(want)+"\n" {
		t.Fatalf("the command wrote\n%s\nfedtest.ProxylessBootstrap writes\n%s", data, want)
	}
	if _, err := grpcxds.NewXDSResolverWithConfigForTesting(data); err != nil {
		t.Fatalf("grpc-go refuses the bootstrap: %v\n%s", err, data)
	}
	var doc struct {
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
		Providers map[string]struct {
			Plugin string            `json:"plugin_name"`
			Config map[string]string `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.XDSServers) != 1 || doc.XDSServers[0].ServerURI != "controlplane.west.federate.internal:15443" {
		t.Fatalf("xds_servers %+v", doc.XDSServers)
	}
	creds := doc.XDSServers[0].ChannelCreds
	if len(creds) != 1 || creds[0].Type != "tls" || creds[0].Config["certificate_file"] != "/run/svid/svid.pem" ||
		creds[0].Config["ca_certificate_file"] != "/run/svid/controlplane-ca.pem" {
		t.Errorf("channel_creds %+v, want mTLS with the SVID, verified by controlplane-ca.pem", creds)
	}
	if want := "sidecar~10.0.0.7~client.shop~shop.svc.cluster.local"; doc.Node.ID != want || !strings.HasPrefix(doc.Node.ID, xds.ClientNodePrefix) {
		t.Errorf("node %q, want %q", doc.Node.ID, want)
	}
	p, ok := doc.Providers[xds.CertificateProvider]
	if !ok || p.Plugin != "file_watcher" || p.Config["certificate_file"] != "/run/svid/svid.pem" ||
		p.Config["private_key_file"] != "/run/svid/svid.pem" || p.Config["ca_certificate_file"] != "/run/svid/bundle.pem" {
		t.Errorf("certificate_providers %+v, want %q: file_watcher over svid.pem and bundle.pem", doc.Providers, xds.CertificateProvider)
	}
}

func TestXDSBootstrapRefusesBadInput(t *testing.T) {
	t.Parallel()
	base := []string{"xds", "bootstrap", "--control-plane", "cp.example:15013", "--namespace", "shop", "--name", "client"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"xds"}, "want 'xds bootstrap'"},
		{"no control plane", []string{"xds", "bootstrap", "--namespace", "shop", "--name", "c"}, "--control-plane is required"},
		{"no namespace", []string{"xds", "bootstrap", "--control-plane", "a:1", "--name", "c"}, "--namespace is required"},
		{"no port", []string{"xds", "bootstrap", "--control-plane", "cp.example", "--namespace", "shop", "--name", "c"}, "want host:port"},
		{"port zero", []string{"xds", "bootstrap", "--control-plane", "cp.example:0", "--namespace", "shop", "--name", "c"}, "port must be a number"},
		{"bad namespace", []string{"xds", "bootstrap", "--control-plane", "a:1", "--namespace", "Shop_1", "--name", "c"}, `namespace "Shop_1"`},
		{"bad name", []string{"xds", "bootstrap", "--control-plane", "a:1", "--namespace", "shop", "--name", "a.b"}, `name "a.b"`},
		{"bad ip", append(base, "--ip", "host"), `"host" is not an IP address`},
		{"relative svid dir", append(base, "--svid-dir", "svid"), "want an absolute path"},
		{"negative refresh", append(base, "--refresh-interval", "-1s"), "is negative"},
		{"extra argument", append(base, "extra"), `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
