package kube

import (
	"context"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
)

// The ServiceImports that federate does not manage are the cluster's
// requests: a user (or a tool) creates one to import the service of its
// namespace and name. With Config.OnRequestedImports set, the source
// reports their hostnames and leaves them alone.

// requested returns the hostnames that the unmanaged ServiceImports name,
// sorted.
func requested(imports []*mcsv1beta1.ServiceImport, suffix string) []string {
	out := []string{}
	for _, si := range imports {
		if si.Labels[ManagedByLabel] != ManagedBy {
			out = append(out, Hostname(si.Namespace, si.Name, suffix))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// reportRequested calls OnRequestedImports when the requests changed.
func (s *Source) reportRequested(l *listers, last []string, first bool) []string {
	if s.cfg.OnRequestedImports == nil {
		return nil
	}
	all, _ := l.imports.List(labels.Everything())
	now := requested(all, s.cfg.DomainSuffix)
	if first || !slices.Equal(now, last) {
		s.log.Info("kube registry: ServiceImports request services", "imports", len(now))
		s.cfg.OnRequestedImports(now)
	}
	return now
}

// RequestedImports lists, once, the hostnames the cluster's unmanaged
// ServiceImports name, so that a control plane starts with the imports it
// had; suffix is the cluster DNS domain ("" for cluster.local).
func RequestedImports(ctx context.Context, cfg *rest.Config, suffix string) ([]string, error) {
	if suffix == "" {
		suffix = DefaultDomainSuffix
	}
	client, err := mcsclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: MCS client for %s: %w", cfg.Host, err)
	}
	list, err := client.MulticlusterV1beta1().ServiceImports(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("kube: list ServiceImports in %s: %w", cfg.Host, err)
	}
	imports := make([]*mcsv1beta1.ServiceImport, len(list.Items))
	for i := range list.Items {
		imports[i] = &list.Items[i]
	}
	return requested(imports, suffix), nil
}
