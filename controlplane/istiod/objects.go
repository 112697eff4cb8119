package istiod

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
	"github.com/federate/federate/registry/registrypb"
)

// Labels and values istiod reads, and those that mark federate's objects.
const (
	// NetworkLabel names the network a gateway Service serves (Istio's
	// label.TopologyNetwork).
	NetworkLabel = "topology.istio.io/network"
	// GatewayPortLabel is the gateway Service's mTLS port when it is not
	// 15443 (Istio's label.NetworkingGatewayPort).
	GatewayPortLabel = "networking.istio.io/gatewayPort"
	// ClusterLabel names the cluster of a workload (Istio's
	// label.TopologyCluster).
	ClusterLabel = "topology.istio.io/cluster"
	// TLSModeLabel set to "istio" makes istiod send Istio mTLS to an
	// endpoint; istiod drops cross-network endpoints without it.
	TLSModeLabel = "security.istio.io/tlsMode"
	// ServiceLabel joins a ServiceEntry's workloadSelector to its
	// WorkloadEntries.
	ServiceLabel = "federate.io/service"
	// RemoteClusterLabel names the remote cluster an object stands for.
	RemoteClusterLabel = "federate.io/remote-cluster"
	// WrittenForLabel marks, beside the managed-by label, what this package
	// writes, apart from the other objects federate manages (the VMs'
	// WorkloadEntries).
	WrittenForLabel = "federate.io/written-for"
	writtenFor      = "istiod"
	// LoadBalancerClass keeps cloud load-balancer controllers away from
	// the gateway Services: their address is the remote gateway's.
	LoadBalancerClass = "federate.io/remote-gateway"
	// NetworkPrefix starts the network names federate writes.
	NetworkPrefix = "federate-"
	// DefaultGatewayPort is Istio's multi-network gateway port.
	DefaultGatewayPort = 15443
)

// Remote is one other cluster of the federation as the writer sees it.
type Remote struct {
	Cluster  string
	Gateways []*registry.Gateway
	Services []*registry.Service
}

// Network is the Istio network federate writes for a remote cluster.
func Network(cluster string) string { return NetworkPrefix + cluster }

// ServiceEntryName names the ServiceEntry of an imported service.
func ServiceEntryName(service string) string { return "federate-" + service }

// GatewayServiceName names the gateway Service of a remote cluster.
func GatewayServiceName(cluster string) string { return "federate-gateway-" + cluster }

// desired is everything the writer wants in the cluster.
type desired struct {
	gateways map[string]*corev1.Service             // namespace/name
	entries  map[string]*networkingv1.ServiceEntry  // namespace/name
	workload map[string]*networkingv1.WorkloadEntry // namespace/name
}

func key(ns, name string) string { return ns + "/" + name }

func managedLabels(extra map[string]string) map[string]string {
	l := map[string]string{kube.ManagedByLabel: kube.ManagedBy, WrittenForLabel: writtenFor}
	maps.Copy(l, extra)
	return l
}

// build turns the remote clusters into the objects istiod needs; gwNamespace
// holds the gateway Services. A remote cluster without a gateway gets
// nothing: every byte between clusters crosses the gateways.
func build(remotes []Remote, gwNamespace string) *desired {
	d := &desired{gateways: map[string]*corev1.Service{}, entries: map[string]*networkingv1.ServiceEntry{}, workload: map[string]*networkingv1.WorkloadEntry{}}
	for _, r := range remotes {
		gw := gatewayService(r, gwNamespace)
		if gw == nil {
			continue
		}
		d.gateways[key(gw.Namespace, gw.Name)] = gw
		for _, svc := range r.Services {
			if svc.GetNamespace() == "" || svc.GetName() == "" || svc.GetHostname() == "" {
				continue // a file-source service with no Kubernetes name
			}
			se := serviceEntry(svc)
			if cur := d.entries[key(se.Namespace, se.Name)]; cur != nil {
				mergeEntry(cur, se)
			} else {
				d.entries[key(se.Namespace, se.Name)] = se
			}
			for _, we := range workloadEntries(r.Cluster, svc) {
				d.workload[key(we.Namespace, we.Name)] = we
			}
		}
	}
	return d
}

// gatewayService is the Service istiod reads as the gateway of the remote
// cluster's network: port and address from the cluster's first usable
// gateway (a federate cluster announces one).
func gatewayService(r Remote, namespace string) *corev1.Service {
	var gw *registry.Gateway
	for _, g := range r.Gateways {
		if g.GetAddress() != "" && g.GetPort() != 0 {
			gw = g
			break
		}
	}
	if gw == nil {
		return nil
	}
	lbls := managedLabels(map[string]string{NetworkLabel: Network(r.Cluster), RemoteClusterLabel: r.Cluster})
	if gw.GetPort() != DefaultGatewayPort {
		lbls[GatewayPortLabel] = strconv.Itoa(int(gw.GetPort()))
	}
	class := LoadBalancerClass
	noNodePorts := false
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: GatewayServiceName(r.Cluster), Namespace: namespace, Labels: lbls},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:             &class,
			AllocateLoadBalancerNodePorts: &noNodePorts,
			Ports:                         []corev1.ServicePort{{Name: "tls", Port: int32(gw.GetPort()), Protocol: corev1.ProtocolTCP}},
		},
	}
	ingress := corev1.LoadBalancerIngress{Hostname: gw.GetAddress()}
	if _, err := netip.ParseAddr(gw.GetAddress()); err == nil {
		// Proxy: kube-proxy must not capture the remote gateway's address
		// on this cluster's nodes.
		mode := corev1.LoadBalancerIPModeProxy
		ingress = corev1.LoadBalancerIngress{IP: gw.GetAddress(), IPMode: &mode}
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{ingress}
	return svc
}

// serviceEntry is the MESH_INTERNAL, STATIC ServiceEntry of an imported
// service; its endpoints are the WorkloadEntries its selector picks.
func serviceEntry(svc *registry.Service) *networkingv1.ServiceEntry {
	se := &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: ServiceEntryName(svc.GetName()), Namespace: svc.GetNamespace(), Labels: managedLabels(nil)},
	}
	se.Spec.Hosts = []string{svc.GetHostname()}
	se.Spec.Location = networkingpb.ServiceEntry_MESH_INTERNAL
	se.Spec.Resolution = networkingpb.ServiceEntry_STATIC
	se.Spec.ExportTo = slices.Clone(svc.GetExportTo())
	se.Spec.WorkloadSelector = &networkingpb.WorkloadSelector{Labels: map[string]string{ServiceLabel: svc.GetName()}}
	for _, p := range svc.GetPorts() {
		se.Spec.Ports = append(se.Spec.Ports, &networkingpb.ServicePort{Name: portName(p), Number: p.GetNumber(), Protocol: strings.ToUpper(p.GetProtocol())})
	}
	se.Spec.SubjectAltNames = subjectAltNames(svc)
	return se
}

func portName(p *registry.Port) string {
	if p.GetName() != "" {
		return p.GetName()
	}
	return "port-" + strconv.Itoa(int(p.GetNumber()))
}

// subjectAltNames are the SPIFFE IDs the sidecars accept from the
// service's endpoints: the remote workloads' own IDs, which istiod cannot
// derive from its own trust domain.
func subjectAltNames(svc *registry.Service) []string {
	var ids []string
	for _, e := range svc.GetEndpoints() {
		if id := e.GetSpiffeId(); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// mergeEntry adds a second cluster's ports and names to a ServiceEntry of
// the same service: the clusters agree on the hostname (namespace sameness).
func mergeEntry(into, from *networkingv1.ServiceEntry) {
	for _, p := range from.Spec.Ports {
		if !slices.ContainsFunc(into.Spec.Ports, func(q *networkingpb.ServicePort) bool { return q.Number == p.Number }) {
			into.Spec.Ports = append(into.Spec.Ports, p)
		}
	}
	for _, id := range from.Spec.SubjectAltNames {
		if !slices.Contains(into.Spec.SubjectAltNames, id) {
			into.Spec.SubjectAltNames = append(into.Spec.SubjectAltNames, id)
		}
	}
	slices.Sort(into.Spec.SubjectAltNames)
}

// workloadEntries groups a remote service's healthy endpoints by locality
// and labels: one WorkloadEntry per group, weighted by its endpoints,
// without an address, on the remote cluster's network. istiod replaces
// each with the network's gateway and keeps the locality for priorities;
// the labels keep DestinationRule subsets working.
func workloadEntries(cluster string, svc *registry.Service) []*networkingv1.WorkloadEntry {
	type group struct {
		locality string
		labels   map[string]string
		weight   uint32
	}
	groups := map[string]*group{}
	for _, e := range svc.GetEndpoints() {
		if e.GetHealth() == registrypb.Health_UNHEALTHY {
			continue
		}
		loc := registry.FormatLocality(e.GetLocality())
		lbls := maps.Clone(e.GetLabels())
		if lbls == nil {
			lbls = map[string]string{}
		}
		k := groupKey(loc, lbls)
		g := groups[k]
		if g == nil {
			g = &group{locality: loc, labels: lbls}
			groups[k] = g
		}
		g.weight += max(e.GetWeight(), 1)
	}
	var out []*networkingv1.WorkloadEntry
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]
		lbls := maps.Clone(g.labels)
		maps.Copy(lbls, map[string]string{
			ServiceLabel: svc.GetName(), ClusterLabel: cluster, RemoteClusterLabel: cluster,
			TLSModeLabel: "istio",
		})
		maps.Copy(lbls, managedLabels(nil))
		we := &networkingv1.WorkloadEntry{
			ObjectMeta: metav1.ObjectMeta{Name: workloadEntryName(svc.GetName(), cluster, k), Namespace: svc.GetNamespace(), Labels: lbls},
		}
		we.Spec.Network = Network(cluster)
		we.Spec.Locality = g.locality
		we.Spec.Weight = g.weight
		we.Spec.Labels = maps.Clone(lbls)
		out = append(out, we)
	}
	return out
}

func groupKey(locality string, lbls map[string]string) string {
	var b strings.Builder
	b.WriteString(locality)
	for _, k := range slices.Sorted(maps.Keys(lbls)) {
		b.WriteString("\x00" + k + "=" + lbls[k])
	}
	return b.String()
}

// workloadEntryName is stable for a (service, cluster, group), so that an
// update changes the weight of the same object.
func workloadEntryName(service, cluster, group string) string {
	sum := sha256.Sum256([]byte(group))
	return "federate-" + cmp.Or(service, "svc") + "-" + cluster + "-" + hex.EncodeToString(sum[:4])
}
