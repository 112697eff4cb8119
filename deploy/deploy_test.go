package deploy

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/federate/federate/internal/kubetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// kustomizations are the bases and overlays users apply, by directory.
var kustomizations = []string{".", "crds/mcs", "crds/istio", "hub", "controlplane", "gateway",
	"overlays/east", "overlays/west", "overlays/central", "overlays/hub", "hub-ha"}

// goldens are the kustomizations with golden files: the others only
// combine them, or differ from overlays/east by the cluster's name.
var goldens = []string{"crds/mcs", "crds/istio", "hub", "controlplane", "gateway", "overlays/east", "overlays/hub", "hub-ha"}

func render(t *testing.T, dir string) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func goldenName(dir string) string {
	if dir == "." {
		return "all.yaml"
	}
	if name, ok := strings.CutPrefix(dir, "overlays/"); ok {
		return "overlay-" + name + ".yaml"
	}
	return filepath.Base(filepath.Clean(dir)) + ".yaml"
}

// Every base renders to its golden file (go test ./deploy -update
// rewrites them after an intended change).
func TestRenderMatchesGolden(t *testing.T) {
	for _, dir := range goldens {
		t.Run(dir, func(t *testing.T) {
			got := render(t, dir)
			path := filepath.Join("testdata", goldenName(dir))
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v: run 'go test ./deploy -run TestRenderMatchesGolden -update'", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("kustomize build %s differs from %s: run 'go test ./deploy -run TestRenderMatchesGolden -update' and review the diff", dir, path)
			}
		})
	}
}

// Every rendered manifest passes a server-side dry-run apply on a real
// apiserver: schemas, defaults and admission accept it.
func TestIntegrationManifestsDryRun(t *testing.T) {
	c := kubetest.Start(t, "dryrun")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Namespaced objects need their namespace to exist, and custom
	// resources their CRDs: create those for real first.
	c.EnsureNamespace(t, "federate-system", nil)
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			data := render(t, dir)
			objs, err := kubetest.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatal("renders no objects")
			}
			if err := kubetest.Apply(ctx, c.Config, data, true); err != nil {
				t.Fatalf("server-side dry run of %s: %v", dir, err)
			}
		})
	}
	// A dry run stores nothing.
	if _, err := c.Client.RbacV1().ClusterRoles().Get(ctx, "federate-controlplane", metav1.GetOptions{}); err == nil {
		t.Error("the dry run created the ClusterRole")
	}
}
