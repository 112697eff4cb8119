package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// EndpointSliceManager is the endpointslice.kubernetes.io/managed-by value
// of the EndpointSlices of imported services.
const EndpointSliceManager = "federate-controlplane"

// imported is one service of the clusterset, by the clusters that export it.
type imported struct {
	namespace, name string
	byCluster       map[string]*registry.Service
	gateways        map[string][]*registry.Gateway // remote cluster -> its gateways
}

// winner is the cluster whose ports a ServiceImport lists when clusters
// disagree: the first by name, the same choice in every cluster.
func winner(cluster, hostname string, remote []RemoteCluster) string {
	best := cluster
	for _, r := range remote {
		for _, s := range r.Services {
			if s.GetHostname() == hostname && r.Name < best {
				best = r.Name
			}
		}
	}
	return best
}

// clusterSet groups every exported service of the federation, ours
// included, by namespace and name.
func clusterSet(cluster string, local []*registry.Service, remote []RemoteCluster) map[string]*imported {
	out := map[string]*imported{}
	add := func(c string, svc *registry.Service, gws []*registry.Gateway) {
		if svc.GetNamespace() == "" || svc.GetName() == "" {
			return // a file-source service with no Kubernetes name
		}
		key := svc.GetNamespace() + "/" + svc.GetName()
		imp := out[key]
		if imp == nil {
			imp = &imported{namespace: svc.GetNamespace(), name: svc.GetName(),
				byCluster: map[string]*registry.Service{}, gateways: map[string][]*registry.Gateway{}}
			out[key] = imp
		}
		imp.byCluster[c] = svc
		if gws != nil {
			imp.gateways[c] = gws
		}
	}
	for _, svc := range local {
		add(cluster, svc, nil)
	}
	for _, r := range remote {
		if r.Name == cluster {
			continue
		}
		for _, svc := range r.Services {
			add(r.Name, svc, r.Gateways)
		}
	}
	return out
}

func (imp *imported) clusters() []string {
	return slices.Sorted(maps.Keys(imp.byCluster))
}

// reconcileImports makes the cluster's ServiceImports, and the
// EndpointSlices that point at the exporting clusters' gateways, match the
// clusterset. It touches only objects labelled as its own.
func (s *Source) reconcileImports(ctx context.Context, l *listers, local []*registry.Service, remote []RemoteCluster) error {
	desired := clusterSet(s.cfg.Cluster, local, remote)
	var errs []error
	wantSlices := map[string]bool{} // namespace/name
	for _, key := range slices.Sorted(maps.Keys(desired)) {
		imp := desired[key]
		if _, err := l.namespaces.Get(imp.namespace); err != nil {
			continue // namespace sameness: a service is imported only where its namespace exists
		}
		if err := s.applyImport(ctx, l, imp); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range imp.clusters() {
			if c == s.cfg.Cluster {
				continue
			}
			es := importSlice(imp, c)
			if es == nil {
				continue
			}
			wantSlices[es.Namespace+"/"+es.Name] = true
			if err := s.applySlice(ctx, l, es); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Withdraw what the federation no longer exports.
	managed := labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedBy})
	current, _ := l.imports.List(managed)
	for _, si := range current {
		if _, ok := desired[si.Namespace+"/"+si.Name]; ok {
			continue
		}
		err := s.mcs.MulticlusterV1beta1().ServiceImports(si.Namespace).Delete(ctx, si.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete ServiceImport %s/%s: %w", si.Namespace, si.Name, err))
			continue
		}
		s.log.Info("kube registry: withdrew ServiceImport", "serviceImport", si.Namespace+"/"+si.Name)
	}
	slicesNow, _ := l.slices.List(managed)
	for _, es := range slicesNow {
		if wantSlices[es.Namespace+"/"+es.Name] {
			continue
		}
		err := s.kube.DiscoveryV1().EndpointSlices(es.Namespace).Delete(ctx, es.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete EndpointSlice %s/%s: %w", es.Namespace, es.Name, err))
		}
	}
	return errors.Join(errs...)
}

// applyImport creates or updates one ServiceImport, spec then status.
func (s *Source) applyImport(ctx context.Context, l *listers, imp *imported) error {
	clusters := imp.clusters()
	ports := imp.byCluster[slices.Min(clusters)].GetPorts()
	spec := mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, Ports: importPorts(ports)}
	status := mcsv1beta1.ServiceImportStatus{EndpointSliceObjects: mcsv1beta1.EndpointSliceObjectsPresent}
	for _, c := range clusters {
		status.Clusters = append(status.Clusters, mcsv1beta1.ClusterStatus{Cluster: c})
	}
	client := s.mcs.MulticlusterV1beta1().ServiceImports(imp.namespace)
	ref := imp.namespace + "/" + imp.name
	cur, err := l.imports.ServiceImports(imp.namespace).Get(imp.name)
	switch {
	case apierrors.IsNotFound(err):
		cur, err = client.Create(ctx, &mcsv1beta1.ServiceImport{
			ObjectMeta: metav1.ObjectMeta{Name: imp.name, Namespace: imp.namespace, Labels: map[string]string{ManagedByLabel: ManagedBy}},
			Spec:       spec,
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create ServiceImport %s: %w", ref, err)
		}
		s.log.Info("kube registry: imported a service", "serviceImport", ref, "clusters", clusters)
	case err != nil:
		return fmt.Errorf("ServiceImport %s: %w", ref, err)
	case cur.Labels[ManagedByLabel] != ManagedBy:
		level := slog.LevelWarn
		if s.cfg.OnRequestedImports != nil {
			level = slog.LevelDebug // a request for the service (requests.go)
		}
		s.log.Log(ctx, level, "kube registry: a ServiceImport that the control plane does not manage is in the way; leaving it alone", "serviceImport", ref)
		return nil
	case !equality.Semantic.DeepEqual(cur.Spec, spec):
		next := cur.DeepCopy()
		next.Spec = spec
		if cur, err = client.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update ServiceImport %s: %w", ref, err)
		}
	}
	status.Conditions = slices.Clone(cur.Status.Conditions)
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type: string(mcsv1beta1.ServiceImportConditionReady), Status: metav1.ConditionTrue,
		Reason: string(mcsv1beta1.ServiceImportReasonReady), Message: fmt.Sprintf("exported by %d cluster(s)", len(clusters)),
	})
	if equality.Semantic.DeepEqual(cur.Status, status) {
		return nil
	}
	next := cur.DeepCopy()
	next.Status = status
	if _, err := client.UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("status of ServiceImport %s: %w", ref, err)
	}
	return nil
}

func importPorts(ports []*registry.Port) []mcsv1beta1.ServicePort {
	out := make([]mcsv1beta1.ServicePort, 0, len(ports))
	for _, p := range ports {
		sp := mcsv1beta1.ServicePort{Name: p.GetName(), Port: int32(p.GetNumber()), Protocol: corev1.ProtocolTCP}
		switch p.GetProtocol() {
		case "UDP":
			sp.Protocol = corev1.ProtocolUDP
		case "SCTP":
			sp.Protocol = corev1.ProtocolSCTP
		}
		out = append(out, sp)
	}
	return out
}

// ImportSliceName names the EndpointSlice of a service imported from a
// cluster.
func ImportSliceName(service, cluster string) string { return service + "-" + cluster }

// importSlice is the EndpointSlice that sends an imported service's
// traffic from cluster c to c's east-west gateways, or nil if c announced
// none: every byte between clusters crosses the gateways.
func importSlice(imp *imported, c string) *discoveryv1.EndpointSlice {
	gws := imp.gateways[c]
	if len(gws) == 0 {
		return nil
	}
	svc := imp.byCluster[c]
	ready := slices.ContainsFunc(svc.GetEndpoints(), func(e *registry.Endpoint) bool {
		return e.GetHealth() != registrypb.Health_UNHEALTHY
	})
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: ImportSliceName(imp.name, c), Namespace: imp.namespace,
			Labels: map[string]string{
				ManagedByLabel:                ManagedBy,
				discoveryv1.LabelManagedBy:    EndpointSliceManager,
				mcsv1beta1.LabelServiceName:   imp.name,
				mcsv1beta1.LabelSourceCluster: c,
			},
		},
	}
	for _, gw := range gws {
		addrType := discoveryv1.AddressTypeFQDN
		if a, err := netip.ParseAddr(gw.GetAddress()); err == nil {
			if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
				continue // the API refuses these in EndpointSlices
			}
			addrType = discoveryv1.AddressTypeIPv4
			if a.Is6() {
				addrType = discoveryv1.AddressTypeIPv6
			}
		}
		if es.AddressType == "" {
			es.AddressType = addrType
			for _, p := range svc.GetPorts() {
				name, port, proto := p.GetName(), int32(gw.GetPort()), corev1.ProtocolTCP
				es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto})
			}
		}
		if addrType != es.AddressType {
			continue // one slice holds one address type
		}
		r := ready
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{gw.GetAddress()},
			Conditions: discoveryv1.EndpointConditions{Ready: &r},
		})
	}
	if es.AddressType == "" {
		return nil
	}
	slices.SortFunc(es.Endpoints, func(a, b discoveryv1.Endpoint) int { return cmp.Compare(a.Addresses[0], b.Addresses[0]) })
	return es
}

func (s *Source) applySlice(ctx context.Context, l *listers, want *discoveryv1.EndpointSlice) error {
	client := s.kube.DiscoveryV1().EndpointSlices(want.Namespace)
	ref := want.Namespace + "/" + want.Name
	cur, err := l.slices.EndpointSlices(want.Namespace).Get(want.Name)
	switch {
	case apierrors.IsNotFound(err):
		if _, err := client.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create EndpointSlice %s: %w", ref, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("EndpointSlice %s: %w", ref, err)
	case cur.Labels[ManagedByLabel] != ManagedBy:
		s.log.Warn("kube registry: an EndpointSlice that the control plane does not manage is in the way; leaving it alone", "endpointSlice", ref)
		return nil
	case cur.AddressType != want.AddressType:
		// The address type cannot change: replace the slice.
		if err := client.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replace EndpointSlice %s: %w", ref, err)
		}
		if _, err := client.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create EndpointSlice %s: %w", ref, err)
		}
		return nil
	case equality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints) && equality.Semantic.DeepEqual(cur.Ports, want.Ports) &&
		equality.Semantic.DeepEqual(cur.Labels, want.Labels):
		return nil
	}
	next := cur.DeepCopy()
	next.Labels, next.Endpoints, next.Ports = want.Labels, want.Endpoints, want.Ports
	if _, err := client.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update EndpointSlice %s: %w", ref, err)
	}
	return nil
}
