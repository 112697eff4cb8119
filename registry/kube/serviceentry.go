package kube

import (
	"cmp"
	"fmt"
	"slices"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/registrypb"
)

// serviceEntryVerdict exports the Istio ServiceEntry namespace/name, with
// its inline endpoints and the WorkloadEntries its workloadSelector picks,
// by the rules of the file source; a ServiceExport names a ServiceEntry
// when no Service of that name exists.
func (s *Source) serviceEntryVerdict(l *listers, namespace, name string) verdict {
	key := namespace + "/" + name
	se, err := l.serviceEntries.ServiceEntries(namespace).Get(name)
	if err != nil {
		return verdict{reason: mcsv1beta1.ServiceExportReasonNoService,
			message: fmt.Sprintf("neither a Service nor an Istio ServiceEntry %s exists in this cluster: create one, or delete this ServiceExport", key)}
	}
	network := s.cfg.Network
	if ns, err := l.namespaces.Get(namespace); err == nil && ns.Labels[NetworkLabel] != "" {
		network = ns.Labels[NetworkLabel]
	}
	entries, _ := l.entries.WorkloadEntries(namespace).List(labels.Everything())
	slices.SortFunc(entries, func(a, b *networkingv1.WorkloadEntry) int { return cmp.Compare(a.Name, b.Name) })
	unhealthy := map[string]bool{}
	var workloads []*file.Document
	for _, we := range entries {
		workloads = append(workloads, &file.Document{ObjectMeta: we.ObjectMeta, WorkloadEntry: &we.Spec})
		for _, c := range we.Status.GetConditions() {
			if c.GetType() == HealthCondition && c.GetStatus() == "False" {
				unhealthy[we.Spec.GetAddress()] = true
			}
		}
	}
	cfg := file.Config{Network: network, Locality: s.cfg.Locality, TrustDomain: s.td.Name()}
	out, err := file.ConvertServiceEntry(cfg, &file.Document{ObjectMeta: se.ObjectMeta, ServiceEntry: &se.Spec}, workloads)
	if err != nil {
		return verdict{reason: mcsv1beta1.ServiceExportReasonInvalidServiceType,
			message: fmt.Sprintf("Istio %v: fix the ServiceEntry to export it", err)}
	}
	for _, e := range out.GetEndpoints() {
		if unhealthy[e.GetAddress()] {
			e.Health = registrypb.Health_UNHEALTHY
		}
	}
	return verdict{valid: true, reason: mcsv1beta1.ServiceExportReasonValid,
		message: "exported the Istio ServiceEntry as " + out.GetHostname(), service: (*registry.Service)(out),
		selector: file.WorkloadSelector(&se.Spec)}
}
