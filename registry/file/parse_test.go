package file

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networkingpb "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/federate/federate/registry/registrypb"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    []*Document
		wantErr string
	}{
		{
			name: "empty",
			data: "",
		},
		{
			name: "comments and markers only",
			data: "# nothing yet\n---\n\n---   # still nothing\n",
		},
		{
			name: "null document",
			data: "~\n",
		},
		{
			name: "documents are counted and located",
			data: "\xef\xbb\xbf# services\r\n---\r\n" +
				"apiVersion: networking.istio.io/v1\r\nkind: WorkloadEntry\r\nmetadata: {name: vm-1, labels: {app: vm}}\r\nspec: {address: 10.0.0.1}\r\n" +
				"---\n---\n# second\n" +
				"apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: vm, namespace: shop}\n\n" +
				"spec: {hosts: [vm.example.internal], ports: [{number: 80, name: http, targetPort: 8080}]}\n" +
				"---\n{apiVersion: networking.istio.io/v1, kind: WorkloadEntry, metadata: {name: vm-2}, spec: {address: '::1'}}\n" +
				"--- # the export\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: vm, namespace: shop}\n",
			want: []*Document{
				{
					File: "vm.yaml", Index: 1, Line: 3,
					ObjectMeta:    metav1.ObjectMeta{Name: "vm-1", Namespace: "default", Labels: map[string]string{"app": "vm"}},
					WorkloadEntry: &networkingpb.WorkloadEntry{Address: "10.0.0.1"},
				},
				{
					File: "vm.yaml", Index: 2, Line: 10,
					ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "shop"},
					ServiceEntry: &networkingpb.ServiceEntry{
						Hosts: []string{"vm.example.internal"},
						Ports: []*networkingpb.ServicePort{{Number: 80, Name: "http", TargetPort: 8080}},
					},
				},
				{
					File: "vm.yaml", Index: 3, Line: 16,
					ObjectMeta:    metav1.ObjectMeta{Name: "vm-2", Namespace: "default"},
					WorkloadEntry: &networkingpb.WorkloadEntry{Address: "::1"},
				},
				{
					File: "vm.yaml", Index: 4, Line: 18,
					ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "shop"},
					ServiceExport: &mcsv1beta1.ServiceExport{
						TypeMeta:   metav1.TypeMeta{APIVersion: "multicluster.x-k8s.io/v1beta1", Kind: "ServiceExport"},
						ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "shop"},
					},
				},
			},
		},
		{
			name: "DestinationRules are left to the control plane",
			data: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: vm}\nspec: {host: vm.example.internal}\n" +
				"---\n{apiVersion: networking.istio.io/v1, kind: WorkloadEntry, metadata: {name: vm-2}, spec: {address: '::1'}}\n",
			want: []*Document{{
				File: "vm.yaml", Index: 2, Line: 6,
				ObjectMeta:    metav1.ObjectMeta{Name: "vm-2", Namespace: "default"},
				WorkloadEntry: &networkingpb.WorkloadEntry{Address: "::1"},
			}},
		},
		{
			name:    "error names the file and document",
			data:    "---\n# first\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\n",
			wantErr: `file: vm.yaml: document 1 (line 4): unknown kind "Gateway"`,
		},
		{
			name:    "garbage",
			data:    "\x00\x01{{{",
			wantErr: "file: vm.yaml: document 1 (line 1): invalid YAML",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("vm.yaml", []byte(tt.data))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse succeeded, want error %q", tt.wantErr)
				}
				if msg := err.Error(); !strings.HasPrefix(msg, tt.wantErr) {
					t.Fatalf("Parse error %q, want it to start with %q", msg, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseLocality(t *testing.T) {
	tests := []struct {
		in      string
		want    *registrypb.Locality
		wantErr string
	}{
		{in: "", want: nil},
		{in: "us-east", want: &registrypb.Locality{Region: "us-east"}},
		{in: "us-east/us-east-1a", want: &registrypb.Locality{Region: "us-east", Zone: "us-east-1a"}},
		{in: "us-east/us-east-1a/rack-7", want: &registrypb.Locality{Region: "us-east", Zone: "us-east-1a", Subzone: "rack-7"}},
		{in: "a/b/c/d", wantErr: "has 4 parts"},
		{in: "/a", wantErr: "empty part"},
		{in: "a/", wantErr: "empty part"},
		{in: "a /b", wantErr: "white space"},
		{in: "a/\tb", wantErr: "white space"},
		{in: "a/b\x01", wantErr: "control characters"},
		{in: "*", wantErr: "'*' is a wildcard"},
		{in: "us-east/*", wantErr: "'*' is a wildcard"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseLocality(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseLocality(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseLocality(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("parseLocality(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(exampleYAML))
	f.Add([]byte(privateYAML))
	f.Add([]byte(""))
	f.Add([]byte("---\n...\n--- # c\n"))
	f.Add([]byte("\x00\xff{{[[: :"))
	f.Add([]byte("kind: ServiceEntry\nmetadata: &a {name: x}\nspec: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Parse("fuzz.yaml", data)
		if err != nil {
			fe, ok := errors.AsType[*FileError](err)
			if !ok || fe.File != "fuzz.yaml" {
				t.Fatalf("Parse error %q does not name the file", err)
			}
			if docs != nil {
				t.Fatalf("Parse returned %d documents with its error", len(docs))
			}
			return
		}
		for i, d := range docs {
			if n := countSet(d.ServiceEntry != nil, d.WorkloadEntry != nil, d.ServiceExport != nil); n != 1 {
				t.Fatalf("document %d holds %d objects; want exactly one", i, n)
			}
			if d.Name == "" || d.Namespace == "" || d.Index < 1 || d.Line < 1 {
				t.Fatalf("document %d is incomplete: %+v", i, d)
			}
			if d.ServiceEntry != nil && len(d.ServiceEntry.GetHosts()) != 1 {
				t.Fatalf("document %d passed with hosts %q", i, d.ServiceEntry.GetHosts())
			}
		}
	})
}

func countSet(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
