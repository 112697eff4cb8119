package spiretest

import (
	"net"
	"strings"
	"testing"
	"text/template"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var confTemplate = template.Must(template.New("server.conf").Parse(`server {
  bind_address = "127.0.0.1"
  bind_port = "{{.BindPort}}"
  socket_path = "{{.Socket}}"
  trust_domain = "{{.TrustDomain}}"
  data_dir = "{{.Dir}}/data"
  log_level = "DEBUG"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"

  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = {{.BundlePort}}
      refresh_hint = "1m"
    }
{{- range .FederatesWith}}
    federates_with "{{.TrustDomain}}" {
      bundle_endpoint_url = "{{.URL}}"
{{- if .EndpointID}}
      bundle_endpoint_profile "https_spiffe" {
        endpoint_spiffe_id = "{{.EndpointID}}"
      }
{{- else}}
      bundle_endpoint_profile "https_web" {}
{{- end}}
    }
{{- end}}
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "{{.Dir}}/data/datastore.sqlite3"
    }
  }
  KeyManager "disk" {
    plugin_data {
      keys_path = "{{.Dir}}/data/keys.json"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`))

func render(t testing.TB, cfg Config, dir, socket string, bindPort, bundlePort int) string {
	t.Helper()
	var b strings.Builder
	err := confTemplate.Execute(&b, map[string]any{
		"BindPort": bindPort, "BundlePort": bundlePort, "Socket": socket, "Dir": dir,
		"TrustDomain": cfg.TrustDomain, "FederatesWith": cfg.FederatesWith,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
