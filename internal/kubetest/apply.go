package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// FieldManager is the field manager of the tests' server-side applies.
const FieldManager = "federate-tests"

// Decode splits multi-document YAML into objects; empty documents are
// skipped.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

// Apply server-side applies every object of data as cfg's user; with
// dryRun the server validates and admits them without storing them. It
// returns the first failure, naming the object.
func Apply(ctx context.Context, cfg *rest.Config, data []byte, dryRun bool) error {
	objs, err := Decode(data)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cached)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		ref := fmt.Sprintf("%s %s/%s", gvk.Kind, obj.GetNamespace(), obj.GetName())
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			// A CRD applied just before may not be discovered yet.
			cached.Invalidate()
			if mapping, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return fmt.Errorf("%s: %w", ref, err)
			}
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			ri = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		if _, err := ri.Apply(ctx, obj.GetName(), obj, opts); err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
	}
	return nil
}

// ApplyFiles applies files for real as the administrator and fails the
// test on an error.
func (c *Cluster) ApplyFiles(t testing.TB, paths ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(ctx, c.Config, data, false); err != nil {
			t.Fatalf("apply %s to %s: %v", p, c.Name, err)
		}
	}
}

// WaitForResource waits until the cluster serves resource in groupVersion,
// as it does a little after its CRD was created.
func (c *Cluster) WaitForResource(t testing.TB, groupVersion, resource string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := c.Client.Discovery().ServerResourcesForGroupVersion(groupVersion)
		if err == nil {
			for _, r := range list.APIResources {
				if r.Name == resource {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve %s in %s after 30s (last error: %v)", c.Name, resource, groupVersion, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// GVR is shorthand for a group, version and resource.
func GVR(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// InstallCRDs applies the CRDs of deploy/crds (MCS and the Istio kinds
// the control plane reads) and waits until they are served.
func (c *Cluster) InstallCRDs(t testing.TB) {
	t.Helper()
	dir := filepath.Join(RepoRoot(), "deploy", "crds")
	c.ApplyFiles(t,
		filepath.Join(dir, "mcs", "serviceexports.yaml"), filepath.Join(dir, "mcs", "serviceimports.yaml"),
		filepath.Join(dir, "istio", "destinationrules.yaml"), filepath.Join(dir, "istio", "serviceentries.yaml"), filepath.Join(dir, "istio", "workloadentries.yaml"),
		filepath.Join(dir, "istio", "workloadgroups.yaml"), filepath.Join(dir, "istio", "sidecars.yaml"))
	for _, r := range []struct{ gv, res string }{
		{"multicluster.x-k8s.io/v1beta1", "serviceexports"}, {"multicluster.x-k8s.io/v1beta1", "serviceimports"},
		{"networking.istio.io/v1", "destinationrules"}, {"networking.istio.io/v1", "serviceentries"}, {"networking.istio.io/v1", "workloadentries"}, {"networking.istio.io/v1", "workloadgroups"}, {"networking.istio.io/v1", "sidecars"},
	} {
		c.WaitForResource(t, r.gv, r.res)
	}
}
