package file

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecodeObject(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		want     *Object
		wantSpec bool
		wantErr  string
	}{
		{name: "empty", doc: ""},
		{name: "null", doc: "~\n"},
		{
			name: "full",
			doc: "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\n" +
				"metadata: {name: vm, namespace: shop, labels: {app: vm}, annotations: {a: b}, uid: x}\n" +
				"status: {}\nspec: {template: {serviceAccount: vm}}\n",
			want: &Object{
				TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "WorkloadGroup"},
				Metadata: metav1.ObjectMeta{Name: "vm", Namespace: "shop", UID: "x", Labels: map[string]string{"app": "vm"}, Annotations: map[string]string{"a": "b"}},
				Spec:     []byte(`{"template":{"serviceAccount":"vm"}}`),
			},
			wantSpec: true,
		},
		{
			name: "default namespace and no spec",
			doc:  `{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "p"}, "spec": null}`,
			want: &Object{
				TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
				Metadata: metav1.ObjectMeta{Name: "p", Namespace: DefaultNamespace},
				Spec:     []byte("null"),
			},
		},
		{name: "invalid YAML", doc: "kind: [", wantErr: "invalid YAML"},
		{name: "a list", doc: "- a\n- b\n", wantErr: "not a Kubernetes object"},
		{name: "a wrongly typed name", doc: "kind: X\nmetadata: {name: [a]}\n", wantErr: "not a Kubernetes object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeObject([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeObject error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeObject: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Object{}, "Typed")); diff != "" {
				t.Fatalf("DecodeObject mismatch (-want +got):\n%s", diff)
			}
			if got != nil && got.HasSpec() != tt.wantSpec {
				t.Errorf("HasSpec() = %v, want %v", got.HasSpec(), tt.wantSpec)
			}
		})
	}
}

// Parse decodes the same envelope, strictly: the metadata of a document is
// an ObjectMeta, annotations included.
func TestParseKeepsTheEnvelope(t *testing.T) {
	docs, err := Parse("vm.yaml", []byte("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"+
		"metadata: {name: vm-1, namespace: shop, labels: {app: vm}, annotations: {owner: ops}}\nspec: {address: 10.0.0.1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := metav1.ObjectMeta{Name: "vm-1", Namespace: "shop", Labels: map[string]string{"app": "vm"}, Annotations: map[string]string{"owner": "ops"}}
	if diff := cmp.Diff(want, docs[0].ObjectMeta); diff != "" {
		t.Errorf("metadata mismatch (-want +got):\n%s", diff)
	}
}
