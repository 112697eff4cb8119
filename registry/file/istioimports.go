package file

import (
	"fmt"
	"slices"
	"strings"

	"github.com/federate/federate/registry"
)

// Istio names the services a workload reaches in two places: a Sidecar's
// egress hosts ("namespace/dnsName") and the exportTo of each Service and
// ServiceEntry (the namespaces that see it). This file turns them into the
// hostnames a cluster imports, for the Kubernetes source and for the
// config directory alike.
//
// A wildcard cannot be sent to the hub as it is: a scoped member holds only
// what it imports, so nothing can list the federation's services that match
// it. A wildcard is therefore read against the services the cluster itself
// declares, as Istio's multicluster DNS needs: "shop/*" imports every
// Service and ServiceEntry host declared in namespace shop here and visible
// (exportTo) to the Sidecar's namespace; a service nobody declares here is
// imported only by its name.

// Declared is a service a cluster declares: a Kubernetes Service or one
// host of an Istio ServiceEntry, with its exportTo ("" or none: "*").
type Declared struct {
	Namespace, Host string
	ExportTo        []string
}

// Sidecar is an Istio Sidecar as imports see it: its namespace, whether it
// selects some workloads only, and the hosts of its egress listeners.
type Sidecar struct {
	Namespace string
	Selects   bool
	Hosts     []string
}

// CheckEgressHost checks one egress host as Istio writes it:
// "namespace/dnsName", the namespace ".", "*", "~" or a name, the dnsName
// "*", "*.suffix" or a hostname.
func CheckEgressHost(h string) error {
	ns, dns, ok := strings.Cut(h, "/")
	if !ok || ns == "" || dns == "" {
		return fmt.Errorf("egress host %q: want namespace/hostname, such as \"*/reviews.shop.svc.cluster.local\" or \"shop/*\"", h)
	}
	switch ns {
	case registry.ExportToOwnNamespace, registry.ExportToAll, registry.ExportToNone:
	default:
		if err := registry.ValidClusterName(ns); err != nil {
			return fmt.Errorf("egress host %q: namespace %q is not \".\", \"*\", \"~\" or a namespace name", h, ns)
		}
	}
	if dns == "*" {
		return nil
	}
	name := strings.TrimPrefix(dns, "*.")
	if err := registry.CheckImports([]string{name}); err != nil {
		return fmt.Errorf("egress host %q: %q is not \"*\", \"*.domain\" or a hostname", h, dns)
	}
	return nil
}

// EgressImports returns the hostnames that egress hosts name for workloads
// of namespace client: each hostname as it is, and each wildcard as the
// declared services it matches and client sees. Hosts that do not check
// (CheckEgressHost) name nothing.
func EgressImports(client string, hosts []string, declared []Declared) []string {
	var out []string
	for _, h := range hosts {
		if CheckEgressHost(h) != nil {
			continue
		}
		ns, dns, _ := strings.Cut(h, "/")
		switch ns {
		case registry.ExportToNone:
			continue
		case registry.ExportToOwnNamespace:
			ns = client
		}
		if !strings.HasPrefix(dns, "*") {
			out = append(out, dns)
			continue
		}
		for _, d := range declared {
			if (ns == registry.ExportToAll || ns == d.Namespace) && registry.ExportedTo(d.ExportTo, d.Namespace, client) &&
				(dns == "*" || strings.HasSuffix(d.Host, dns[1:])) {
				out = append(out, d.Host)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// IstioImports returns, sorted, the hostnames the workloads of namespaces
// reach as Istio computes it: a namespace with Sidecars (that select no
// workloads) reaches what their egress hosts name; one without reaches what
// the root namespace's such Sidecar names, "." being the namespace itself;
// one without either reaches every declared service whose exportTo lets it
// see it. Sidecars that select workloads add what they name.
func IstioImports(namespaces []string, root string, sidecars []Sidecar, declared []Declared) []string {
	byNamespace := map[string][]Sidecar{}
	var out, everywhere []string
	var restricted []Declared // those whose exportTo names namespaces
	for _, d := range declared {
		if len(d.ExportTo) == 0 || slices.Contains(d.ExportTo, registry.ExportToAll) {
			everywhere = append(everywhere, d.Host)
		} else {
			restricted = append(restricted, d)
		}
	}
	for _, sc := range sidecars {
		if sc.Selects {
			out = append(out, EgressImports(sc.Namespace, sc.Hosts, declared)...)
			continue
		}
		byNamespace[sc.Namespace] = append(byNamespace[sc.Namespace], sc)
	}
	for _, ns := range namespaces {
		own := byNamespace[ns]
		if len(own) == 0 {
			own = byNamespace[root]
		}
		for _, sc := range own {
			out = append(out, EgressImports(ns, sc.Hosts, declared)...)
		}
		if len(own) > 0 {
			continue
		}
		// Every namespace sees most services: add those once, and check
		// the others, few, namespace by namespace.
		out, everywhere = append(out, everywhere...), nil
		for _, d := range restricted {
			if registry.ExportedTo(d.ExportTo, d.Namespace, ns) {
				out = append(out, d.Host)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
