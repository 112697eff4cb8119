package file

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const importsYAML = `# what this cluster imports
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: reviews
  namespace: shop
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: ratings
  namespace: shop
spec:
  type: ClusterSetIP
  ports:
  - port: 9080
`

const sidecarYAML = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: web
spec:
  egress:
  - hosts:
    - "*/api.partner.example"
    - "ledger/*"
    - "~/never.example"
`

// Two ServiceEntries of namespace ledger: one every namespace sees, one
// only its own, which the Sidecar of web cannot reach.
const ledgerYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: books
  namespace: ledger
spec:
  hosts: [books.ledger.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: private
  namespace: ledger
spec:
  hosts: [private.ledger.internal]
  exportTo: ["."]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2}]
`

// The ServiceImports and Sidecars of a config directory name its imports:
// a Sidecar's hostnames as they are, its wildcards as the directory's
// ServiceEntries they match and its namespace sees; "~" names nothing.
func TestImportDirReadsServiceImportsAndSidecars(t *testing.T) {
	dir := t.TempDir()
	d := NewImportDir(dir, nil)
	got, err := d.Read()
	if err != nil || got.Named || len(got.Hosts) != 0 {
		t.Fatalf("empty directory: %+v, %v; want nothing named", got, err)
	}
	writeFiles(t, dir, map[string]string{"imports.yaml": importsYAML, "sidecar.yaml": sidecarYAML, "ledger.yaml": ledgerYAML})
	got, err = d.Read()
	if err != nil || d.Problems() != nil {
		t.Fatalf("Read: %v, %v", err, d.Problems())
	}
	want := []string{"api.partner.example", "books.ledger.internal", "ratings.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}
	if !got.Named || !slices.Equal(got.Hosts, want) {
		t.Fatalf("imports = %+v, want %v", got, want)
	}
	// Removing the file removes its imports.
	if err := os.Remove(filepath.Join(dir, "sidecar.yaml")); err != nil {
		t.Fatal(err)
	}
	got, _ = d.Read()
	if want := []string{"ratings.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}; !slices.Equal(got.Hosts, want) {
		t.Fatalf("after removing sidecar.yaml: %v, want %v", got.Hosts, want)
	}
}

// A file that breaks, or is emptied while being rewritten, keeps the
// imports it named; the problem names the file and the line; once fixed,
// the file's new imports are in force.
func TestImportDirKeepsLastGoodImports(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"imports.yaml": importsYAML})
	d := NewImportDir(dir, nil)
	if _, err := d.Read(); err != nil {
		t.Fatal(err)
	}
	want := []string{"ratings.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}
	for _, tc := range []struct{ name, data, wantErr string }{
		{"bad egress host", importsYAML + "---\n" + strings.Replace(sidecarYAML, `"ledger/*"`, `"ledger"`, 1),
			`imports.yaml: document 3 (line 18): Sidecar web/default: spec.egress[0].hosts[1]: egress host "ledger": want namespace/hostname`},
		{"unknown field", strings.Replace(importsYAML, "  ports:", "  portz:", 1), "imports.yaml: document 2 (line 8): ServiceImport shop/ratings"},
		{"bad name", strings.Replace(importsYAML, "name: reviews", "name: re.views", 1), `imports.yaml: document 1 (line 2): ServiceImport shop/re.views: metadata.name names a service`},
		{"emptied", "", "the file is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFiles(t, dir, map[string]string{"imports.yaml": tc.data})
			got, err := d.Read()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Hosts, want) {
				t.Errorf("imports = %v, want the last good %v", got.Hosts, want)
			}
			problem := d.Problems()
			var fe *FileError
			if problem == nil || !errors.As(problem, &fe) || !strings.Contains(problem.Error(), tc.wantErr) {
				t.Errorf("Problems() = %v, want a *FileError containing %q", problem, tc.wantErr)
			}
		})
	}
	writeFiles(t, dir, map[string]string{"imports.yaml": strings.Replace(importsYAML, "name: ratings", "name: details", 1)})
	got, _ := d.Read()
	if want := []string{"details.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}; !slices.Equal(got.Hosts, want) || d.Problems() != nil {
		t.Fatalf("after the fix: %v (%v), want %v", got.Hosts, d.Problems(), want)
	}
}

// Istio's rules: a namespace with its own Sidecar reaches what it names; one
// without uses the root namespace's Sidecar, "." being itself; one without
// either reaches every declared service exported to it; a Sidecar that
// selects workloads adds what it names.
func TestIstioImports(t *testing.T) {
	declared := []Declared{
		{Namespace: "shop", Host: "reviews.shop.svc.cluster.local"},
		{Namespace: "shop", Host: "cart.shop.svc.cluster.local", ExportTo: []string{"."}},
		{Namespace: "pay", Host: "card.pay.svc.cluster.local", ExportTo: []string{"web"}},
		{Namespace: "pay", Host: "hidden.pay.svc.cluster.local", ExportTo: []string{"~"}},
	}
	for _, tc := range []struct {
		name       string
		namespaces []string
		sidecars   []Sidecar
		want       []string
	}{
		{"no sidecar: what exportTo shows", []string{"web"}, nil,
			[]string{"card.pay.svc.cluster.local", "reviews.shop.svc.cluster.local"}},
		{"no sidecar, own namespace", []string{"shop"}, nil,
			[]string{"cart.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}},
		{"own sidecar", []string{"web"}, []Sidecar{{Namespace: "web", Hosts: []string{"*/cart.shop.svc.cluster.local"}}},
			[]string{"cart.shop.svc.cluster.local"}},
		{"root sidecar, dot is each namespace", []string{"web", "shop"}, []Sidecar{{Namespace: "istio-system", Hosts: []string{"./*"}}},
			[]string{"cart.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}},
		{"wildcard suffix across namespaces", []string{"web"}, []Sidecar{{Namespace: "web", Hosts: []string{"*/*.pay.svc.cluster.local"}}},
			[]string{"card.pay.svc.cluster.local"}},
		{"selecting sidecar adds", []string{"web"}, []Sidecar{
			{Namespace: "web", Hosts: []string{"shop/*"}},
			{Namespace: "web", Selects: true, Hosts: []string{"*/api.partner.example", "~/*"}}},
			[]string{"api.partner.example", "reviews.shop.svc.cluster.local"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := IstioImports(tc.namespaces, "istio-system", tc.sidecars, declared)
			if !slices.Equal(got, tc.want) {
				t.Errorf("IstioImports = %v, want %v", got, tc.want)
			}
		})
	}
}
