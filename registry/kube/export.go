package kube

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// verdict is what the source decided about one ServiceExport.
type verdict struct {
	valid   bool
	reason  mcsv1beta1.ServiceExportConditionReason
	message string
	service *registry.Service // set when valid
	// selector picks the workloads that serve it: the Service's selector
	// or the ServiceEntry's workloadSelector; VM agents' entries join by it.
	selector registry.WorkloadSelector
}

// build turns every ServiceExport into a registry.Service, sorted by
// hostname, and says why the others are not exported.
func (s *Source) build(l *listers) ([]*registry.Service, map[string]verdict) {
	exports, _ := l.exports.List(labels.Everything())
	slices.SortFunc(exports, func(a, b *mcsv1beta1.ServiceExport) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	verdicts := make(map[string]verdict, len(exports))
	var services []*registry.Service
	for _, exp := range exports {
		key := exp.Namespace + "/" + exp.Name
		svc, err := l.services.Services(exp.Namespace).Get(exp.Name)
		if err != nil {
			// No Service: an Istio ServiceEntry of the same name is
			// exported the same way.
			v := s.serviceEntryVerdict(l, exp.Namespace, exp.Name)
			verdicts[key] = v
			if v.valid {
				services = append(services, v.service)
			}
			continue
		}
		switch {
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
			verdicts[key] = verdict{reason: mcsv1beta1.ServiceExportReasonInvalidServiceType,
				message: fmt.Sprintf("Service %s is of type ExternalName, which cannot be exported: export the Service it points at", key)}
			continue
		}
		out := s.service(l, svc)
		services = append(services, out)
		verdicts[key] = verdict{valid: true, reason: mcsv1beta1.ServiceExportReasonValid,
			message: "exported as " + out.GetHostname(), service: out, selector: serviceSelector(svc)}
	}
	slices.SortFunc(services, func(a, b *registry.Service) int { return cmp.Compare(a.GetHostname(), b.GetHostname()) })
	return services, verdicts
}

// serviceSelector picks a Service's workloads: by its selector, at its
// numeric target ports (a named one is a Pod's port name, which VMs do
// not have).
func serviceSelector(svc *corev1.Service) registry.WorkloadSelector {
	sel := registry.WorkloadSelector{Labels: maps.Clone(svc.Spec.Selector)}
	for _, p := range svc.Spec.Ports {
		if t := p.TargetPort.IntValue(); t > 0 && t != int(p.Port) {
			if sel.TargetPorts == nil {
				sel.TargetPorts = make(map[string]uint32)
			}
			sel.TargetPorts[p.Name] = uint32(t)
		}
	}
	return sel
}

// Hostname is the federated name of a Service.
func Hostname(namespace, name, suffix string) string {
	return name + "." + namespace + ".svc." + suffix
}

// service converts a Service with its EndpointSlices and the
// WorkloadEntries its selector picks.
func (s *Source) service(l *listers, svc *corev1.Service) *registry.Service {
	out := &registry.Service{
		Hostname:  Hostname(svc.Namespace, svc.Name, s.cfg.DomainSuffix),
		Namespace: svc.Namespace,
		Name:      svc.Name,
	}
	for _, p := range svc.Spec.Ports {
		out.Ports = append(out.Ports, &registry.Port{Name: p.Name, Number: uint32(p.Port), Protocol: protocol(p)})
	}
	network := s.cfg.Network
	if ns, err := l.namespaces.Get(svc.Namespace); err == nil && ns.Labels[NetworkLabel] != "" {
		network = ns.Labels[NetworkLabel]
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	slicesOf, _ := l.slices.EndpointSlices(svc.Namespace).List(sel)
	slices.SortFunc(slicesOf, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	for _, es := range slicesOf {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range es.Endpoints {
			health := registrypb.Health_HEALTHY
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				health = registrypb.Health_UNHEALTHY
			}
			for _, addr := range ep.Addresses {
				e := &registry.Endpoint{
					Address:  addr,
					Ports:    slicePorts(svc, es),
					Locality: s.nodeLocality(l, ep.NodeName),
					Network:  network,
					Health:   health,
					SpiffeId: s.spiffeID(svc.Namespace, ""),
					Weight:   1,
				}
				out.Endpoints = append(out.Endpoints, e)
			}
		}
	}
	if len(svc.Spec.Selector) > 0 {
		entries, _ := l.entries.WorkloadEntries(svc.Namespace).List(labels.Everything())
		slices.SortFunc(entries, func(a, b *networkingv1.WorkloadEntry) int { return cmp.Compare(a.Name, b.Name) })
		selector := labels.SelectorFromSet(svc.Spec.Selector)
		for _, we := range entries {
			// Metadata labels win over spec labels, as in Istio.
			lbls := maps.Clone(we.Spec.GetLabels())
			if lbls == nil {
				lbls = map[string]string{}
			}
			maps.Copy(lbls, we.Labels)
			if !selector.Matches(labels.Set(lbls)) {
				continue
			}
			if e := s.workloadEndpoint(svc, we, network); e != nil {
				out.Endpoints = append(out.Endpoints, e)
			}
		}
	}
	slices.SortStableFunc(out.Endpoints, func(a, b *registry.Endpoint) int {
		aa, _ := netip.ParseAddr(a.GetAddress())
		ba, _ := netip.ParseAddr(b.GetAddress())
		return aa.Compare(ba)
	})
	return out
}

// protocol is the port's application protocol: appProtocol, else Istio's
// port-name prefix convention, else TCP.
func protocol(p corev1.ServicePort) string {
	if p.AppProtocol != nil && *p.AppProtocol != "" {
		return strings.ToUpper(*p.AppProtocol)
	}
	prefix, _, _ := strings.Cut(p.Name, "-")
	switch prefix = strings.ToUpper(prefix); prefix {
	case "HTTP", "HTTP2", "HTTPS", "GRPC", "TLS", "TCP", "MONGO", "MYSQL", "REDIS":
		return prefix
	}
	if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
		return string(p.Protocol)
	}
	return "TCP"
}

// slicePorts maps each service port name to the target port the slice
// names for it; EndpointSlice ports carry the service port's name.
func slicePorts(svc *corev1.Service, es *discoveryv1.EndpointSlice) map[string]uint32 {
	out := make(map[string]uint32, len(svc.Spec.Ports))
	for _, sp := range svc.Spec.Ports {
		for _, p := range es.Ports {
			if p.Port != nil && p.Name != nil && *p.Name == sp.Name {
				out[sp.Name] = uint32(*p.Port)
			}
		}
	}
	return out
}

// nodeLocality reads the node's topology labels, falling back to the
// cluster's locality for what a node does not say.
func (s *Source) nodeLocality(l *listers, nodeName *string) *registry.Locality {
	loc := proto.CloneOf(s.cfg.Locality)
	if loc == nil {
		loc = &registry.Locality{}
	}
	if nodeName == nil {
		return loc
	}
	node, err := l.nodes.Get(*nodeName)
	if err != nil {
		return loc
	}
	if r := node.Labels[RegionLabel]; r != "" {
		loc = &registry.Locality{Region: r, Zone: node.Labels[ZoneLabel], Subzone: node.Labels[SubzoneLabel]}
	}
	return loc
}

func (s *Source) workloadEndpoint(svc *corev1.Service, we *networkingv1.WorkloadEntry, network string) *registry.Endpoint {
	addr, err := netip.ParseAddr(we.Spec.GetAddress())
	if err != nil {
		// Istio allows host names here; the federation routes by address.
		s.log.Warn("kube registry: skipping a WorkloadEntry without an IP address", "workloadEntry", we.Namespace+"/"+we.Name, "address", we.Spec.GetAddress())
		return nil
	}
	loc := proto.CloneOf(s.cfg.Locality)
	if text := we.Spec.GetLocality(); text != "" {
		l, err := registry.ParseLocality(text)
		if err != nil {
			s.log.Warn("kube registry: ignoring a WorkloadEntry's invalid locality; the cluster's applies", "workloadEntry", we.Namespace+"/"+we.Name, "err", err)
		} else {
			loc = l
		}
	}
	health := registrypb.Health_HEALTHY
	for _, c := range we.Status.GetConditions() {
		if c.GetType() == HealthCondition && c.GetStatus() == "False" {
			health = registrypb.Health_UNHEALTHY
		}
	}
	e := &registry.Endpoint{
		Address:  addr.String(),
		Ports:    make(map[string]uint32, len(svc.Spec.Ports)),
		Locality: loc,
		Network:  cmp.Or(we.Spec.GetNetwork(), network),
		Health:   health,
		SpiffeId: s.spiffeID(svc.Namespace, we.Spec.GetServiceAccount()),
		Weight:   max(we.Spec.GetWeight(), 1),
	}
	if lbls := maps.Clone(we.Spec.GetLabels()); len(lbls) > 0 {
		e.Labels = lbls
	}
	for _, p := range svc.Spec.Ports {
		target := we.Spec.GetPorts()[p.Name]
		if target == 0 && p.TargetPort.IntValue() > 0 {
			target = uint32(p.TargetPort.IntValue())
		}
		e.Ports[p.Name] = cmp.Or(target, uint32(p.Port))
	}
	return e
}

// spiffeID is the workload identity of a service account; Pods are not
// watched, so EndpointSlice endpoints get the namespace's default account.
func (s *Source) spiffeID(namespace, serviceAccount string) string {
	id, err := spiffeid.FromSegments(s.td, "ns", namespace, "sa", cmp.Or(serviceAccount, "default"))
	if err != nil {
		return ""
	}
	return id.String()
}
