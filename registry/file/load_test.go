package file

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/federate/federate/registry/registrypb"
)

// exampleYAML is the shape the package documents: an exported ServiceEntry
// with an inline endpoint and a selected WorkloadEntry.
const exampleYAML = `apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: order, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: order, namespace: shop, labels: {app: order}}
spec:
  hosts: [order.shop.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 18080}]
  workloadSelector: {labels: {app: order}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: order-1, namespace: shop}
spec: {address: 127.0.0.1, ports: {http: 18081}, locality: us-east/us-east-1a, network: east, labels: {app: order, version: v1}, weight: 2, serviceAccount: order}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: order-2, namespace: shop}
spec: {address: 127.0.0.2, ports: {http: 18082}, labels: {app: order, version: v2}, locality: us-east/us-east-1b, serviceAccount: order}
`

// ledgerExport exports privateYAML's service.
const ledgerExport = `---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: ledger, namespace: shop}
`

// privateYAML declares a service that is not exported.
const privateYAML = `apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger.shop.svc.cluster.local]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.9}]
`

// testConfig returns the cluster defaults the tests use, for dir.
func testConfig(dir string) Config {
	return Config{
		Dir:         dir,
		Network:     "home",
		Locality:    &registrypb.Locality{Region: "eu-west", Zone: "eu-west-1a"},
		TrustDomain: "east.shop",
	}
}

// writeFiles writes files into dir, each by a rename so that a concurrent
// reader never sees half a file.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// orderService is what exampleYAML yields under testConfig.
func orderService() *registrypb.Service {
	return &registrypb.Service{
		Hostname:  "order.shop.svc.cluster.local",
		Namespace: "shop",
		Name:      "order",
		Ports:     []*registrypb.Port{{Name: "http", Number: 8080, Protocol: "HTTP"}},
		Endpoints: []*registrypb.Endpoint{
			{
				Address:  "127.0.0.1",
				Ports:    map[string]uint32{"http": 18081},
				Locality: &registrypb.Locality{Region: "us-east", Zone: "us-east-1a"},
				Network:  "east",
				Labels:   map[string]string{"app": "order", "version": "v1"},
				Health:   registrypb.Health_HEALTHY,
				SpiffeId: "spiffe://east.shop/ns/shop/sa/order",
				Weight:   2,
			},
			{
				Address:  "127.0.0.2",
				Ports:    map[string]uint32{"http": 18082},
				Locality: &registrypb.Locality{Region: "us-east", Zone: "us-east-1b"},
				Network:  "home",
				Labels:   map[string]string{"app": "order", "version": "v2"},
				Health:   registrypb.Health_HEALTHY,
				SpiffeId: "spiffe://east.shop/ns/shop/sa/order",
				Weight:   1,
			},
		},
	}
}

func TestLoad(t *testing.T) {
	home := &registrypb.Locality{Region: "eu-west", Zone: "eu-west-1a"}
	tests := []struct {
		name  string
		files map[string]string
		want  []*registrypb.Service
	}{
		{
			name:  "istio example",
			files: map[string]string{"order.yaml": exampleYAML, "ledger.yml": privateYAML},
			want:  []*registrypb.Service{orderService()},
		},
		{
			name:  "empty directory",
			files: nil,
			want:  nil,
		},
		{
			name: "exportTo travels with the service",
			files: map[string]string{"till.yaml": `
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: till, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: till, namespace: shop}
spec:
  hosts: [till.shop.svc.cluster.local]
  exportTo: [".", billing]
  ports: [{number: 8080, name: http}]
`},
			want: []*registrypb.Service{{
				Hostname: "till.shop.svc.cluster.local", Namespace: "shop", Name: "till", ExportTo: []string{".", "billing"},
				Ports: []*registrypb.Port{{Name: "http", Number: 8080}},
			}},
		},
		{
			name: "ports and defaults",
			files: map[string]string{"pay.yaml": `
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: pay}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: pay}
spec:
  hosts: [pay.example.internal]
  ports:
  - {number: 8080, name: http, protocol: HTTP, targetPort: 18080}
  - {number: 9090, name: grpc, protocol: GRPC}
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.10, weight: 0}
  - {address: 10.0.0.9, ports: {grpc: 19090, unused: 7}}
  - {address: 10.0.0.9}
  - {address: "2001:DB8::1", locality: ap}
`},
			want: []*registrypb.Service{{
				Hostname:  "pay.example.internal",
				Namespace: "default",
				Name:      "pay",
				Ports: []*registrypb.Port{
					{Name: "http", Number: 8080, Protocol: "HTTP"},
					{Name: "grpc", Number: 9090, Protocol: "GRPC"},
				},
				Endpoints: []*registrypb.Endpoint{
					defaultEndpoint("10.0.0.9", 18080, 9090, home),
					defaultEndpoint("10.0.0.9", 18080, 19090, home),
					defaultEndpoint("10.0.0.10", 18080, 9090, home),
					defaultEndpoint("2001:db8::1", 18080, 9090, &registrypb.Locality{Region: "ap"}),
				},
			}},
		},
		{
			name: "several documents and files, sorted by hostname",
			files: map[string]string{
				"b.yml": `# services of team b
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: b}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec: {hosts: [b.example.internal], ports: [{number: 80, name: http}]}
...
---
# nothing here
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec: {hosts: [a.example.internal], ports: [{number: 80, name: http}]}
`,
				"c.yaml": `apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: c}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: c}
spec: {hosts: [c.example.internal], ports: [{number: 80, name: http}]}
`,
				"notes.txt":    "not a service file",
				".hidden.yaml": "kind: Broken",
			},
			want: []*registrypb.Service{
				bareService("a"), bareService("b"), bareService("c"),
			},
		},
		{
			name: "selector stays in its namespace and metadata labels win",
			files: map[string]string{"shop.yaml": `
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: cart, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  ports: [{number: 80, name: http}]
  workloadSelector: {labels: {app: cart}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart-1, namespace: shop, labels: {app: cart, track: stable}}
spec: {address: 10.1.0.1, labels: {app: other, track: canary}, network: west}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart-2, namespace: other}
spec: {address: 10.1.0.2, labels: {app: cart}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart-3, namespace: shop}
spec: {address: 10.1.0.3, labels: {app: carts}}
`},
			want: []*registrypb.Service{{
				Hostname:  "cart.shop.svc.cluster.local",
				Namespace: "shop",
				Name:      "cart",
				Ports:     []*registrypb.Port{{Name: "http", Number: 80}},
				Endpoints: []*registrypb.Endpoint{{
					Address:  "10.1.0.1",
					Ports:    map[string]uint32{"http": 80},
					Locality: home,
					Network:  "west",
					Labels:   map[string]string{"app": "cart", "track": "stable"},
					Health:   registrypb.Health_HEALTHY,
					SpiffeId: "spiffe://east.shop/ns/shop/sa/default",
					Weight:   1,
				}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			got, err := Load(testConfig(dir))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Load mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func defaultEndpoint(addr string, http, grpc uint32, loc *registrypb.Locality) *registrypb.Endpoint {
	return &registrypb.Endpoint{
		Address:  addr,
		Ports:    map[string]uint32{"http": http, "grpc": grpc},
		Locality: loc,
		Network:  "home",
		Health:   registrypb.Health_HEALTHY,
		SpiffeId: "spiffe://east.shop/ns/default/sa/default",
		Weight:   1,
	}
}

func bareService(name string) *registrypb.Service {
	return &registrypb.Service{
		Hostname:  name + ".example.internal",
		Namespace: "default",
		Name:      name,
		Ports:     []*registrypb.Port{{Name: "http", Number: 80}},
	}
}

// serviceEntry returns a file declaring an exported ServiceEntry (and its
// ServiceExport after it) with the given spec lines, indented by two spaces.
func serviceEntry(name string, spec ...string) string {
	return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name +
		"}\nspec:\n  " + strings.Join(spec, "\n  ") + "\n" +
		"---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: " + name + "}\n"
}

const (
	okHosts = "hosts: [svc.example.internal]"
	okPorts = "ports: [{number: 80, name: http}]"
)

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		// wantErr are the parts the message must hold besides the file name.
		wantErr []string
		// wantFile is the file the error must name; "bad.yaml" when empty.
		wantFile string
	}{
		{
			name:    "unknown kind",
			files:   map[string]string{"bad.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {}\n"},
			wantErr: []string{"document 1 (line 1)", `unknown kind "Service"`, "a config directory holds Istio objects"},
		},
		{
			name:    "missing kind",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n"},
			wantErr: []string{"kind is missing"},
		},
		{
			name:    "unsupported apiVersion",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {}\n"},
			wantErr: []string{`apiVersion "networking.istio.io/v2" is not supported`},
		},
		{
			name:    "missing name",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {namespace: shop}\nspec: {" + okHosts + "}\n"},
			wantErr: []string{"ServiceEntry: metadata.name is missing"},
		},
		{
			name:    "missing metadata",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nspec: {address: 10.0.0.1}\n"},
			wantErr: []string{"WorkloadEntry: metadata.name is missing"},
		},
		{
			name:    "no host",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okPorts)},
			wantErr: []string{"ServiceEntry default/x: spec.hosts is empty"},
		},
		{
			name:    "two hosts",
			files:   map[string]string{"bad.yaml": serviceEntry("x", "hosts: [a.example.internal, b.example.internal]", okPorts)},
			wantErr: []string{"spec.hosts lists 2 hosts", "exactly one is supported", "one ServiceEntry per host"},
		},
		{
			name:    "wildcard host",
			files:   map[string]string{"bad.yaml": serviceEntry("x", "hosts: ['*.example.internal']", okPorts)},
			wantErr: []string{`host "*.example.internal" is a wildcard`},
		},
		{
			name:    "exportTo names a bad namespace",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "exportTo: [Shop]")},
			wantErr: []string{"spec.exportTo", `"Shop" is not ".", "*", "~" or a namespace name`},
		},
		{
			name:    "exportTo combines * with a namespace",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "exportTo: ['*', shop]")},
			wantErr: []string{"spec.exportTo", `exportTo "*" cannot be combined`},
		},
		{
			name:    "no ports",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts)},
			wantErr: []string{"spec.ports is empty"},
		},
		{
			name:    "port zero",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 0, name: http}]")},
			wantErr: []string{"spec.ports[0]: port number 0 is out of range: use 1-65535"},
		},
		{
			name:    "port too large",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 80, name: http}, {number: 65536, name: big}]")},
			wantErr: []string{"spec.ports[1]: port number 65536 is out of range"},
		},
		{
			name:    "target port too large",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 80, name: http, targetPort: 70000}]")},
			wantErr: []string{"targetPort 70000 is out of range"},
		},
		{
			name:    "unnamed port",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 80}]")},
			wantErr: []string{"port 80 has no name"},
		},
		{
			name:    "duplicate port name",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 80, name: http}, {number: 81, name: http}]")},
			wantErr: []string{`spec.ports[1]: duplicate port name "http"`},
		},
		{
			name:    "duplicate port number",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 80, name: http}, {number: 80, name: web}]")},
			wantErr: []string{`spec.ports[1]: duplicate port number 80 (also port "http")`},
		},
		{
			name:    "endpoint port out of range",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{address: 10.0.0.1, ports: {http: 0}}]")},
			wantErr: []string{`spec.endpoints[0].ports["http"]: port 0 is out of range`},
		},
		{
			name:    "DNS endpoint",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{address: 10.0.0.1}, {address: db.example.com}]")},
			wantErr: []string{`spec.endpoints[1].address "db.example.com" is not an IP address`, "DNS names are not supported yet"},
		},
		{
			name:    "invalid IP",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{address: 300.1.2.3}]")},
			wantErr: []string{`address "300.1.2.3" is not an IP address`},
		},
		{
			name:    "missing address",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{ports: {http: 8080}}]")},
			wantErr: []string{"spec.endpoints[0].address is missing"},
		},
		{
			name: "invalid WorkloadEntry IP in second document",
			files: map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts) +
				"---\n# the VM\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm}\nspec: {address: vm.example.com}\n"},
			wantErr: []string{"document 3 (line 13)", `WorkloadEntry default/vm: spec.address "vm.example.com" is not an IP address`},
		},
		{
			name:    "locality with empty part",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{address: 10.0.0.1, locality: us-east//a}]")},
			wantErr: []string{`spec.endpoints[0].locality: registry: invalid locality "us-east//a": has an empty part`, "region/zone/subzone"},
		},
		{
			name:    "locality with four parts",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm}\nspec: {address: 10.0.0.1, locality: a/b/c/d}\n"},
			wantErr: []string{`spec.locality: registry: invalid locality "a/b/c/d": has 4 parts`},
		},
		{
			name:    "locality with white space",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{address: 10.0.0.1, locality: 'us east'}]")},
			wantErr: []string{`invalid locality "us east": contains white space`},
		},
		{
			name: "duplicate hostname across files",
			files: map[string]string{
				"a.yaml":   serviceEntry("first", okHosts, okPorts),
				"bad.yaml": serviceEntry("second", okHosts, okPorts),
			},
			wantErr: []string{`ServiceEntry default/second: host "svc.example.internal" is already declared by ServiceEntry default/first in `, "a.yaml document 1"},
		},
		{
			name: "duplicate object name",
			files: map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts) + "---\n" +
				serviceEntry("x", "hosts: [other.example.internal]", okPorts)},
			wantErr: []string{"document 3", "ServiceEntry default/x is already declared in", "bad.yaml document 1"},
		},
		{
			name:    "unknown spec field",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "hostz: [x]")},
			wantErr: []string{`spec: unknown field "hostz"`, "Istio's ServiceEntry reference"},
		},
		{
			name:    "unknown top-level field",
			files:   map[string]string{"bad.yaml": "exported: true\n" + serviceEntry("x", okHosts, okPorts)},
			wantErr: []string{`unknown field "exported"`},
		},
		{
			name:    "unknown metadata field",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namspace: shop}\nspec: {}\n"},
			wantErr: []string{`unknown field "metadata.namspace"`},
		},
		{
			name: "the old export field says what to write instead",
			files: map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: shop}\nexport: true\n" +
				"spec: {hosts: [svc.example.internal], ports: [{number: 80, name: http}]}\n"},
			wantErr: []string{"document 1 (line 1)", `ServiceEntry shop/x: the top-level field "export" is not part of Istio's API`,
				"remove it and export the service with a ServiceExport of the same name and namespace:\n---\n" +
					"apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata:\n  name: x\n  namespace: shop\n"},
		},
		{
			name:    "endpoints beside a workload selector",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "resolution: STATIC", "endpoints: [{address: 10.0.0.1}]", "workloadSelector: {labels: {app: x}}")},
			wantErr: []string{"spec.endpoints and spec.workloadSelector are both set: Istio accepts one of them"},
		},
		{
			name:    "empty workload selector",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts, "workloadSelector: {labels: {}}")},
			wantErr: []string{"spec.workloadSelector.labels is empty"},
		},
		{
			name:    "label that is not a string",
			files:   map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, labels: {version: 2}}\nspec: {address: 10.0.0.1}\n"},
			wantErr: []string{"metadata.labels has the wrong type (number, want string): quote numbers"},
		},
		{
			name:    "invalid YAML reports the file line",
			files:   map[string]string{"bad.yaml": serviceEntry("x", okHosts, okPorts) + "---\nkind: ServiceEntry\nmetadata:\n  name: [x\n"},
			wantErr: []string{"document 3 (line 12): invalid YAML: yaml: line 14:"},
		},
		{
			name:    "not a mapping",
			files:   map[string]string{"bad.yaml": "- a\n- b\n"},
			wantErr: []string{"not a Kubernetes object"},
		},
		{
			name: "broken file beside good ones",
			files: map[string]string{
				"a.yaml":   exampleYAML,
				"bad.yaml": serviceEntry("x", okHosts, "ports: [{number: 0, name: http}]"),
			},
			wantErr: []string{"port number 0 is out of range"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			got, err := Load(testConfig(dir))
			if err == nil {
				t.Fatalf("Load succeeded, want an error; got %d services", len(got))
			}
			if got != nil {
				t.Errorf("Load returned %d services with its error, want none", len(got))
			}
			wantFile := filepath.Join(dir, "bad.yaml")
			if tt.wantFile != "" {
				wantFile = filepath.Join(dir, tt.wantFile)
			}
			fe, ok := errors.AsType[*FileError](err)
			if !ok {
				t.Fatalf("Load error %q is not a *FileError", err)
			}
			if fe.File != wantFile {
				t.Errorf("FileError.File = %q, want %q", fe.File, wantFile)
			}
			msg := err.Error()
			t.Log(msg)
			for _, want := range append([]string{"file: " + wantFile + ": "}, tt.wantErr...) {
				if !strings.Contains(msg, want) {
					t.Errorf("Load error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "no directory", cfg: Config{TrustDomain: "east.shop"}, wantErr: "Config.Dir is empty"},
		{name: "no trust domain", cfg: Config{Dir: dir}, wantErr: "Config.TrustDomain"},
		{name: "missing directory", cfg: Config{Dir: filepath.Join(dir, "absent"), TrustDomain: "east.shop"}, wantErr: "read config directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Load error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
