package file

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// DefaultInterval is how often Run polls the directory when Config.Interval
// is zero.
const DefaultInterval = time.Second

// Config describes a directory of service files and the cluster defaults
// that its endpoints inherit.
type Config struct {
	// Dir is the directory of *.yaml and *.yml files, as ReadDir lists
	// them: subdirectories and names starting with "." are ignored;
	// symbolic links are followed.
	Dir string
	// Network is the network of endpoints that name none.
	Network string
	// Locality is the locality of endpoints that name none.
	Locality *registrypb.Locality
	// TrustDomain is the trust domain of the endpoints' SPIFFE IDs, such as
	// "east.shop".
	TrustDomain string
	// Interval is how often Run polls Dir; zero means DefaultInterval.
	Interval time.Duration
	// Logger receives Run's reports; nil means slog.Default().
	Logger *slog.Logger
}

// Load reads every file in cfg.Dir once and returns the exported services,
// sorted by hostname with endpoints sorted by address then port. A
// ServiceEntry is exported by a ServiceExport of the same name and
// namespace, in any file of the directory. It reads the directory with
// ReadDir. Any error in any file fails the whole load: Load then returns no
// services, and an error that reports every broken file, each as a
// *FileError.
func Load(cfg Config) ([]*registrypb.Service, error) {
	td, err := cfg.trustDomain()
	if err != nil {
		return nil, err
	}
	docs, err := ParseDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	set, err := build(cfg, td, docs)
	return set.services, err
}

// trustDomain checks that cfg names a directory and returns its trust
// domain.
func (cfg Config) trustDomain() (spiffeid.TrustDomain, error) {
	if cfg.Dir == "" {
		return spiffeid.TrustDomain{}, errors.New("file: Config.Dir is empty: set the directory of service files")
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("file: Config.TrustDomain %q: %w", cfg.TrustDomain, err)
	}
	return td, nil
}

// NotExported is a ServiceEntry of the directory that no ServiceExport
// exports, or a ServiceExport that names no ServiceEntry: either stays in
// the cluster, and says so in the logs and the status.
type NotExported struct {
	// Ref is "ServiceEntry namespace/name" or "ServiceExport namespace/name".
	Ref string
	// Host is the ServiceEntry's host; empty for a ServiceExport.
	Host string
	// File and Line locate the object.
	File string
	Line int
	// Reason says why and what to do.
	Reason string
}

// serviceSet is what the documents of a directory make.
type serviceSet struct {
	services    []*registrypb.Service
	notExported []NotExported
}

// build checks the documents of all files against each other and converts
// the exported ServiceEntries.
func build(cfg Config, td spiffeid.TrustDomain, docs []*Document) (serviceSet, error) {
	objects := make(map[string]*Document) // by ref
	hosts := make(map[string]*Document)
	workloads := make(map[string][]*Document) // by namespace
	exports := make(map[string]*Document)     // by namespace/name
	for _, d := range docs {
		if prev, ok := objects[d.ref()]; ok {
			return serviceSet{}, d.where(fmt.Errorf("%s is already declared in %s document %d: give each object its own name",
				d.ref(), prev.File, prev.Index))
		}
		objects[d.ref()] = d
		switch {
		case d.WorkloadEntry != nil:
			workloads[d.Namespace] = append(workloads[d.Namespace], d)
			continue
		case d.ServiceExport != nil:
			exports[d.Namespace+"/"+d.Name] = d
			continue
		}
		host := d.ServiceEntry.GetHosts()[0]
		if prev, ok := hosts[host]; ok {
			return serviceSet{}, d.where(fmt.Errorf("%s: host %q is already declared by %s in %s document %d: declare each host once",
				d.ref(), host, prev.ref(), prev.File, prev.Index))
		}
		hosts[host] = d
	}

	var set serviceSet
	for _, d := range docs {
		if d.ServiceEntry == nil {
			continue
		}
		key := d.Namespace + "/" + d.Name
		if exports[key] == nil {
			set.notExported = append(set.notExported, NotExported{
				Ref: d.ref(), Host: d.ServiceEntry.GetHosts()[0], File: d.File, Line: d.Line,
				Reason: "no ServiceExport of the same name and namespace: write one to export it:\n" + ServiceExportYAML(d.Namespace, d.Name),
			})
			continue
		}
		delete(exports, key)
		svc, err := convert(cfg, td, d, workloads[d.Namespace])
		if err != nil {
			return serviceSet{}, d.where(fmt.Errorf("%s: %w", d.ref(), err))
		}
		set.services = append(set.services, svc)
	}
	for _, d := range exports {
		set.notExported = append(set.notExported, NotExported{
			Ref: d.ref(), File: d.File, Line: d.Line,
			Reason: "no ServiceEntry of the same name and namespace: it exports nothing until one is written",
		})
	}
	slices.SortFunc(set.services, func(a, b *registrypb.Service) int {
		return strings.Compare(a.GetHostname(), b.GetHostname())
	})
	slices.SortFunc(set.notExported, func(a, b NotExported) int { return strings.Compare(a.Ref, b.Ref) })
	return set, nil
}

// WorkloadSelector is how a ServiceEntry picks the workloads that VM
// agents register: by its workloadSelector, at its ports' targetPorts.
func WorkloadSelector(se *networkingpb.ServiceEntry) registry.WorkloadSelector {
	sel := registry.WorkloadSelector{Labels: maps.Clone(se.GetWorkloadSelector().GetLabels())}
	for _, p := range se.GetPorts() {
		if t := p.GetTargetPort(); t != 0 {
			if sel.TargetPorts == nil {
				sel.TargetPorts = make(map[string]uint32)
			}
			sel.TargetPorts[p.GetName()] = t
		}
	}
	return sel
}

// ConvertServiceEntry converts an exported ServiceEntry and the
// WorkloadEntries of its namespace into a service by the file source's
// rules; the Kubernetes source uses it for the ServiceEntries of its
// cluster, whose Documents name no file. The ServiceEntry is checked as
// Parse checks it; cfg.Dir is not read.
func ConvertServiceEntry(cfg Config, se *Document, workloads []*Document) (*registrypb.Service, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("file: Config.TrustDomain %q: %w", cfg.TrustDomain, err)
	}
	if se.ServiceEntry == nil {
		return nil, fmt.Errorf("file: %s is not a ServiceEntry", se.ref())
	}
	if err := checkServiceEntry(se.ServiceEntry); err != nil {
		return nil, fmt.Errorf("%s: %w", se.ref(), err)
	}
	return convert(cfg, td, se, workloads)
}

// convert turns an exported ServiceEntry and the WorkloadEntries of its
// namespace into a service.
func convert(cfg Config, td spiffeid.TrustDomain, d *Document, workloads []*Document) (*registrypb.Service, error) {
	se := d.ServiceEntry
	svc := &registrypb.Service{
		Hostname:  se.GetHosts()[0],
		Namespace: d.Namespace,
		Name:      d.Name,
		ExportTo:  slices.Clone(se.GetExportTo()),
	}
	for _, p := range se.GetPorts() {
		svc.Ports = append(svc.Ports, &registrypb.Port{
			Name:     p.GetName(),
			Number:   p.GetNumber(),
			Protocol: p.GetProtocol(),
		})
	}
	for i, w := range se.GetEndpoints() {
		ep, err := endpoint(cfg, td, se.GetPorts(), w, maps.Clone(w.GetLabels()), d.Namespace)
		if err != nil {
			return nil, fmt.Errorf("spec.endpoints[%d]: %w", i, err)
		}
		svc.Endpoints = append(svc.Endpoints, ep)
	}
	if sel := se.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
		for _, w := range workloads {
			// Metadata labels win over spec labels, as in Istio.
			labels := maps.Clone(w.WorkloadEntry.GetLabels())
			if labels == nil {
				labels = make(map[string]string, len(w.Labels))
			}
			maps.Copy(labels, w.Labels)
			if !selects(sel, labels) {
				continue
			}
			ep, err := endpoint(cfg, td, se.GetPorts(), w.WorkloadEntry, labels, d.Namespace)
			if err != nil {
				if w.File == "" {
					return nil, fmt.Errorf("selected %s: %w", w.ref(), err)
				}
				return nil, fmt.Errorf("selected %s in %s document %d: %w", w.ref(), w.File, w.Index, err)
			}
			svc.Endpoints = append(svc.Endpoints, ep)
		}
	}
	slices.SortStableFunc(svc.Endpoints, func(a, b *registrypb.Endpoint) int {
		// Addresses were checked by Parse.
		aa, _ := netip.ParseAddr(a.GetAddress())
		ba, _ := netip.ParseAddr(b.GetAddress())
		if c := aa.Compare(ba); c != 0 {
			return c
		}
		for _, p := range svc.GetPorts() {
			if c := cmp.Compare(a.GetPorts()[p.GetName()], b.GetPorts()[p.GetName()]); c != 0 {
				return c
			}
		}
		return 0
	})
	return svc, nil
}

// selects reports whether every label of sel is in labels.
func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// endpoint converts a workload, inline or a WorkloadEntry, of a service with
// the given ports in namespace ns.
func endpoint(cfg Config, td spiffeid.TrustDomain, ports []*networkingpb.ServicePort, w *networkingpb.WorkloadEntry, labels map[string]string, ns string) (*registrypb.Endpoint, error) {
	addr, err := parseAddress(w.GetAddress())
	if err != nil {
		return nil, err
	}
	loc, err := parseLocality(w.GetLocality())
	if err != nil {
		return nil, fmt.Errorf("locality: %w", err)
	}
	if loc == nil && cfg.Locality != nil {
		loc = proto.CloneOf(cfg.Locality)
	}
	sa := w.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE ID for service account %q: %w", sa, err)
	}
	ep := &registrypb.Endpoint{
		Address:  addr.String(),
		Ports:    make(map[string]uint32, len(ports)),
		Locality: loc,
		Network:  cmp.Or(w.GetNetwork(), cfg.Network),
		Health:   registrypb.Health_HEALTHY,
		SpiffeId: id.String(),
		Weight:   max(w.GetWeight(), 1),
	}
	if len(labels) > 0 {
		ep.Labels = labels
	}
	for _, p := range ports {
		ep.Ports[p.GetName()] = cmp.Or(w.GetPorts()[p.GetName()], p.GetTargetPort(), p.GetNumber())
	}
	return ep, nil
}
