package kube

import (
	"context"
	"fmt"
	"slices"

	istiolisters "istio.io/client-go/pkg/listers/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1beta1"
)

// listers read the informers' caches.
type listers struct {
	services       corelisters.ServiceLister
	slices         discoverylisters.EndpointSliceLister
	namespaces     corelisters.NamespaceLister
	nodes          corelisters.NodeLister
	exports        mcslisters.ServiceExportLister
	imports        mcslisters.ServiceImportLister
	entries        istiolisters.WorkloadEntryLister
	serviceEntries istiolisters.ServiceEntryLister
	groups         istiolisters.WorkloadGroupLister
	destinations   istiolisters.DestinationRuleLister
	sidecars       istiolisters.SidecarLister // nil unless Config.OnIstioImports is set
}

// requiredAPI names custom resources the source watches, by group version,
// and where their definitions come from when they are missing.
type requiredAPI struct {
	groupVersion string
	resources    []string
	install      string
}

// sidecarAPI is required when Sidecars name imports (OnIstioImports).
var sidecarAPI = requiredAPI{"networking.istio.io/v1", []string{"sidecars"},
	"install Istio, or its CRDs alone (kubectl apply -k deploy/crds/istio): importing what Sidecars name reads them"}

// requiredAPIs are the custom resources the source always watches.
var requiredAPIs = []requiredAPI{
	{"multicluster.x-k8s.io/v1beta1", []string{"serviceexports", "serviceimports"},
		"install the MCS API CRDs (kubectl apply -k deploy/crds/mcs)"},
	{"networking.istio.io/v1", []string{"serviceentries", "workloadentries", "workloadgroups", "destinationrules"},
		"install Istio, or its CRDs alone (kubectl apply -k deploy/crds/istio)"},
}

// checkAPIs fails early, saying what to install, when the cluster is
// unreachable or lacks a custom resource the informers would wait for
// forever.
func (s *Source) checkAPIs(ctx context.Context) error {
	if _, err := s.kube.Discovery().ServerVersion(); err != nil {
		return fmt.Errorf("kube: cannot reach the Kubernetes API at %s: %w; check the kubeconfig and that the cluster is up", s.cfg.Kube.Host, err)
	}
	apis := requiredAPIs
	if s.cfg.OnIstioImports != nil {
		apis = append(slices.Clone(apis), sidecarAPI)
	}
	for _, api := range apis {
		list, err := s.kube.Discovery().ServerResourcesForGroupVersion(api.groupVersion)
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("kube: %s does not serve %s: %s", s.cfg.Kube.Host, api.groupVersion, api.install)
		}
		if err != nil {
			return fmt.Errorf("kube: discover %s at %s: %w", api.groupVersion, s.cfg.Kube.Host, err)
		}
		for _, want := range api.resources {
			if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
				return fmt.Errorf("kube: %s serves %s without %s: %s", s.cfg.Kube.Host, api.groupVersion, want, api.install)
			}
		}
	}
	return ctx.Err()
}
