package file

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingpb "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/federate/federate/registry/registrypb"
)

// kubectl output (a List with status, managedFields and timestamps), a
// hand-written multi-document file with comments, WorkloadEntries of two
// versions and a DestinationRule load as two exported services; the
// ServiceEntry without a ServiceExport is reported, not exported.
func TestLoadRealisticDirectory(t *testing.T) {
	cfg := testConfig("testdata/shop")
	td, err := cfg.trustDomain()
	if err != nil {
		t.Fatal(err)
	}
	docs, err := ParseDir(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := build(cfg, td, docs)
	if err != nil {
		t.Fatal(err)
	}
	type ep struct {
		Addr     string
		Port     uint32
		Weight   uint32
		Locality string
		ID       string
	}
	got := map[string][]ep{}
	for _, svc := range set.services {
		for _, e := range svc.GetEndpoints() {
			got[svc.GetHostname()] = append(got[svc.GetHostname()], ep{
				Addr: e.GetAddress(), Port: e.GetPorts()[svc.GetPorts()[0].GetName()], Weight: e.GetWeight(),
				Locality: e.GetLocality().GetRegion() + "/" + e.GetLocality().GetZone(), ID: e.GetSpiffeId(),
			})
		}
	}
	want := map[string][]ep{
		"orders.shop.svc.cluster.local": {
			{"10.20.0.11", 18080, 1, "us-east/us-east-1a", "spiffe://east.shop/ns/shop/sa/orders"},
			{"10.20.0.12", 18080, 3, "us-east/us-east-1b", "spiffe://east.shop/ns/shop/sa/orders"},
		},
		"payments.shop.svc.cluster.local": {
			{"10.20.1.21", 9090, 1, "eu-west/eu-west-1a", "spiffe://east.shop/ns/shop/sa/payments"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("exported services (-want +got):\n%s", diff)
	}
	if n := len(set.notExported); n != 1 || set.notExported[0].Ref != "ServiceEntry shop/inventory" ||
		set.notExported[0].Host != "inventory.shop.svc.cluster.local" || !strings.HasSuffix(set.notExported[0].File, "payments.yaml") ||
		!strings.Contains(set.notExported[0].Reason, "kind: ServiceExport\nmetadata:\n  name: inventory\n  namespace: shop\n") {
		t.Errorf("not exported = %+v, want ServiceEntry shop/inventory with the ServiceExport to write", set.notExported)
	}
}

// Decode types every object it knows, and places each: documents, list
// items and their lines.
func TestDecodeTypesAndPlacesObjects(t *testing.T) {
	data, err := os.ReadFile("testdata/shop/kubectl-get.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode("kubectl-get.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("Decode returned %d objects, want the List's 2 items", len(objs))
	}
	se, ok := objs[0].Typed.(*networkingv1.ServiceEntry)
	if !ok {
		t.Fatalf("item 1 is %T, want *networkingv1.ServiceEntry", objs[0].Typed)
	}
	if se.Name != "orders" || se.Namespace != "shop" || se.Generation != 3 || se.CreationTimestamp.IsZero() ||
		len(se.ManagedFields) != 1 || se.Spec.GetResolution() != networkingpb.ServiceEntry_STATIC {
		t.Errorf("ServiceEntry decoded as %+v", se)
	}
	if sx, ok := objs[1].Typed.(*mcsv1alpha1.ServiceExport); !ok || sx.Name != "orders" || len(sx.Status.Conditions) != 1 {
		t.Errorf("item 2 = %#v, want the ServiceExport with its status", objs[1].Typed)
	}
	for i, o := range objs {
		if o.Document != 1 || o.Item != i+1 || o.Line != 2 {
			t.Errorf("object %d placed at document %d item %d line %d, want document 1 item %d line 2", i, o.Document, o.Item, o.Line, i+1)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	const se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: [a.example.internal]}\n"
	tests := []struct {
		name string
		data string
		want string
	}{
		{
			name: "a list item is named",
			data: "# two\napiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(se, "\n", "\n  ") + "\n- {apiVersion: networking.istio.io/v1, kind: WorkloadEntry, metadata: {name: b}, spec: {adress: 10.0.0.1}}\n",
			want: `file: f.yaml: document 1 item 2 (line 2): WorkloadEntry default/b: spec: unknown field "adress": check the name against Istio's WorkloadEntry reference`,
		},
		{
			name: "an unknown field beside the spec",
			data: se + "---\n" + strings.Replace(se, "spec:", "spek: {}\nspec:", 1),
			want: `file: f.yaml: document 2 (line 6): ServiceEntry default/a: unknown field "spek"`,
		},
		{
			name: "an unknown field in a DestinationRule's spec",
			data: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, trafficPolicy: {loadBalancer: {localityLBSetting: {}}}}\n",
			want: `unknown field "localityLBSetting"`,
		},
		{
			name: "an apiVersion that is not Istio's",
			data: strings.Replace(se, "networking.istio.io/v1", "networking.istio.io/v2", 1),
			want: `file: f.yaml: document 1 (line 1): ServiceEntry: apiVersion "networking.istio.io/v2" is not supported: use one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3`,
		},
		{
			name: "a ServiceExport of another group",
			data: "apiVersion: multicluster.k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: a}\n",
			want: `ServiceExport: apiVersion "multicluster.k8s.io/v1beta1" is not supported: use one of multicluster.x-k8s.io/v1beta1, multicluster.x-k8s.io/v1alpha1`,
		},
		{
			name: "text after a separator",
			data: se + "--- {kind: X}\n",
			want: "file: f.yaml: line 5: invalid YAML: invalid Yaml document separator",
		},
		{
			name: "no kind",
			data: "apiVersion: v1\nmetadata: {name: a}\n",
			want: "kind is missing",
		},
		{
			name: "a bad name",
			data: strings.Replace(se, "name: a", "name: A_1", 1),
			want: `metadata.name "A_1" is not a valid name`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode("f.yaml", []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode = %d objects, error %v; want an error containing %q", len(objs), err, tt.want)
			}
			if _, ok := errors.AsType[*FileError](err); !ok {
				t.Errorf("error %T is not a *FileError", err)
			}
		})
	}
}

// A ServiceEntry without its ServiceExport stays in the cluster, and Run
// says so in one log line and in NotExported until a ServiceExport is
// written; then the service is exported and the report is gone.
func TestRunReportsServiceEntriesNotExported(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"order.yaml": exampleYAML, "ledger.yaml": privateYAML})
	r := startRun(t, testConfig(dir))
	src := r.src
	if got := hostnames(receive(t, r.updates, "first set")); !cmp.Equal(got, []string{"order.shop.svc.cluster.local"}) {
		t.Fatalf("first set = %v, want order only", got)
	}
	rec := receive(t, r.logs, "the not-exported line")
	for rec.Message != "file registry: not exported" {
		rec = receive(t, r.logs, "the not-exported line")
	}
	if attrs := recordAttrs(rec); attrs["object"] != "ServiceEntry shop/ledger" || attrs["host"] != "ledger.shop.svc.cluster.local" || attrs["file"] != filepath.Join(dir, "ledger.yaml") {
		t.Errorf("not-exported line has %v", attrs)
	}
	if got := src.NotExported(); len(got) != 1 || got[0].Ref != "ServiceEntry shop/ledger" {
		t.Errorf("NotExported() = %+v, want ServiceEntry shop/ledger", got)
	}

	writeFiles(t, dir, map[string]string{"ledger.yaml": privateYAML + ledgerExport})
	if got := hostnames(receive(t, r.updates, "the set with ledger")); !cmp.Equal(got, []string{"ledger.shop.svc.cluster.local", "order.shop.svc.cluster.local"}) {
		t.Fatalf("set = %v, want ledger and order", got)
	}
	if got := src.NotExported(); len(got) != 0 {
		t.Errorf("NotExported() = %+v after the ServiceExport, want none", got)
	}
}

func hostnames(services []*registrypb.Service) []string {
	var out []string
	for _, s := range services {
		out = append(out, s.GetHostname())
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"kubectl-get.yaml", "workloads.yaml", "payments.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata/shop", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("kind: List\nitems: [{kind: ServiceExport, apiVersion: multicluster.x-k8s.io/v1alpha1, metadata: {name: a}}, 7]\n"))
	f.Add([]byte("--- # c\n---\n{kind: DestinationRule, apiVersion: networking.istio.io/v1, metadata: {name: a}, spec: {host: 1}}\r\n"))
	f.Add([]byte("\xef\xbb\xbf---\x00\n..."))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode("fuzz.yaml", data)
		if err != nil {
			fe, ok := errors.AsType[*FileError](err)
			if !ok || fe.File != "fuzz.yaml" || fe.Line < 1 {
				t.Fatalf("Decode error %q does not name the file and line", err)
			}
			if objs != nil {
				t.Fatalf("Decode returned %d objects with its error", len(objs))
			}
			return
		}
		for i, o := range objs {
			if o.Kind == "" || o.Metadata.Namespace == "" || o.Document < 1 || o.Line < 1 {
				t.Fatalf("object %d is incomplete: %+v", i, o)
			}
			if o.Typed != nil && (o.Metadata.Name == "" || fmt.Sprint(o.Typed) == "") {
				t.Fatalf("object %d is typed without a name: %+v", i, o)
			}
		}
	})
}

// recordAttrs returns a log record's attributes as strings.
func recordAttrs(r slog.Record) map[string]string {
	out := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		out[a.Key] = a.Value.String()
		return true
	})
	return out
}

// DecodeOnly types the kinds asked for and leaves the others untyped and
// unchecked, for readers that skip them.
func TestDecodeOnlyTypesTheKindsAskedFor(t *testing.T) {
	data, err := os.ReadFile("testdata/shop/payments.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := DecodeOnly("payments.yaml", append(data, "---\n{apiVersion: networking.istio.io/v1, kind: ServiceEntry, metadata: {name: x}, spec: {hostz: []}}\n"...), KindDestinationRule)
	if err != nil {
		t.Fatalf("DecodeOnly checked a kind it was not asked for: %v", err)
	}
	for _, o := range objs {
		if (o.Typed != nil) != (o.Kind == KindDestinationRule) {
			t.Errorf("%s typed = %v, want only the DestinationRule typed", o.Ref(), o.Typed != nil)
		}
	}
}
