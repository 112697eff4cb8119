package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/federate/federate/registry/file"
)

// With Config.OnIstioImports set, the source reports what the cluster's
// Istio objects name to import, as Istio computes what the workloads of
// each namespace reach (file.IstioImports): the egress hosts of its
// Sidecars, and, for a namespace without a Sidecar, every Service and
// ServiceEntry host whose exportTo lets it see it.

const (
	// IstioRootNamespace is Istio's default root namespace, whose Sidecar
	// without a workloadSelector applies to every namespace without one.
	IstioRootNamespace = "istio-system"
	// ExportToAnnotation is Istio's exportTo of a Kubernetes Service,
	// namespaces separated by commas.
	ExportToAnnotation = "networking.istio.io/exportTo"
)

// systemNamespace reports whether ns holds Kubernetes' own objects, which
// no mesh workload reaches across clusters.
func systemNamespace(ns string) bool {
	return ns == "kube-system" || ns == "kube-public" || ns == "kube-node-lease"
}

// istioObjects are the objects whose Istio rules name imports.
type istioObjects struct {
	namespaces     []*corev1.Namespace
	services       []*corev1.Service
	serviceEntries []*networkingv1.ServiceEntry
	sidecars       []*networkingv1.Sidecar
}

// imports returns the hostnames the objects name, sorted. The objects
// federate writes (ServiceEntries of imported services for istiod,
// gateway Services) are left out: they follow the imports, they do not
// name them.
func (o istioObjects) imports(suffix string) []string {
	var namespaces []string
	for _, ns := range o.namespaces {
		if !systemNamespace(ns.Name) {
			namespaces = append(namespaces, ns.Name)
		}
	}
	var declared []file.Declared
	for _, svc := range o.services {
		if systemNamespace(svc.Namespace) || svc.Labels[ManagedByLabel] == ManagedBy ||
			svc.Namespace == metav1.NamespaceDefault && svc.Name == "kubernetes" {
			continue
		}
		var exportTo []string
		for _, v := range strings.Split(svc.Annotations[ExportToAnnotation], ",") {
			if v = strings.TrimSpace(v); v != "" {
				exportTo = append(exportTo, v)
			}
		}
		declared = append(declared, file.Declared{Namespace: svc.Namespace, Host: Hostname(svc.Namespace, svc.Name, suffix), ExportTo: exportTo})
	}
	for _, se := range o.serviceEntries {
		if se.Labels[ManagedByLabel] == ManagedBy {
			continue
		}
		for _, h := range se.Spec.GetHosts() {
			declared = append(declared, file.Declared{Namespace: se.Namespace, Host: h, ExportTo: se.Spec.GetExportTo()})
		}
	}
	var sidecars []file.Sidecar
	for _, sc := range o.sidecars {
		s := file.Sidecar{Namespace: sc.Namespace, Selects: sc.Spec.GetWorkloadSelector() != nil}
		for _, eg := range sc.Spec.GetEgress() {
			s.Hosts = append(s.Hosts, eg.GetHosts()...)
		}
		sidecars = append(sidecars, s)
	}
	out := file.IstioImports(namespaces, IstioRootNamespace, sidecars, declared)
	if out == nil {
		out = []string{}
	}
	return out
}

// listIstioObjects reads the objects from the informers' caches.
func listIstioObjects(l *listers) istioObjects {
	var o istioObjects
	o.namespaces, _ = l.namespaces.List(labels.Everything())
	o.services, _ = l.services.List(labels.Everything())
	o.serviceEntries, _ = l.serviceEntries.List(labels.Everything())
	o.sidecars, _ = l.sidecars.List(labels.Everything())
	return o
}

// reportIstio calls OnIstioImports when what the Istio objects name
// changed.
func (s *Source) reportIstio(l *listers, last []string, first bool) []string {
	if s.cfg.OnIstioImports == nil {
		return nil
	}
	now := listIstioObjects(l).imports(s.cfg.DomainSuffix)
	if first || !slices.Equal(now, last) {
		s.log.Info("kube registry: Istio Sidecars and exportTo name services", "imports", len(now))
		s.cfg.OnIstioImports(now)
	}
	return now
}

// IstioImports lists, once, the hostnames the cluster's Istio objects name
// to import, so that a control plane starts with the imports it had;
// suffix is the cluster DNS domain ("" for cluster.local).
func IstioImports(ctx context.Context, cfg *rest.Config, suffix string) ([]string, error) {
	if suffix == "" {
		suffix = DefaultDomainSuffix
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: client for %s: %w", cfg.Host, err)
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: Istio client for %s: %w", cfg.Host, err)
	}
	all := metav1.ListOptions{}
	var o istioObjects
	nss, err := kc.CoreV1().Namespaces().List(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("kube: list Namespaces in %s: %w", cfg.Host, err)
	}
	svcs, err := kc.CoreV1().Services(metav1.NamespaceAll).List(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("kube: list Services in %s: %w", cfg.Host, err)
	}
	ses, err := ic.NetworkingV1().ServiceEntries(metav1.NamespaceAll).List(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("kube: list ServiceEntries in %s: %w", cfg.Host, err)
	}
	scs, err := ic.NetworkingV1().Sidecars(metav1.NamespaceAll).List(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("kube: list Sidecars in %s: %w", cfg.Host, err)
	}
	for i := range nss.Items {
		o.namespaces = append(o.namespaces, &nss.Items[i])
	}
	for i := range svcs.Items {
		o.services = append(o.services, &svcs.Items[i])
	}
	o.serviceEntries = append(o.serviceEntries, ses.Items...)
	o.sidecars = append(o.sidecars, scs.Items...)
	return o.imports(suffix), nil
}
