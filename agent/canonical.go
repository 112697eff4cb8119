package agent

import (
	"maps"

	"istio.io/api/label"
	networkingpb "istio.io/api/networking/v1alpha3"
)

// The labels that name a workload's canonical service and revision, in
// the order Istio looks them up (istio.io/istio pkg/config/labels).
var (
	canonicalNameLabels     = []string{label.ServiceCanonicalName.Name, "app.kubernetes.io/name", "app"}
	canonicalRevisionLabels = []string{label.ServiceCanonicalRevision.Name, "app.kubernetes.io/version", "version"}
)

// CanonicalService returns a workload's canonical service and revision as
// Istio derives them from its labels: the first of canonicalNameLabels
// that is set, else workload; the first of canonicalRevisionLabels, else
// "latest". A label set to "" counts as set, as in Istio.
func CanonicalService(labels map[string]string, workload string) (service, revision string) {
	lookup := func(keys []string, fallback string) string {
		for _, k := range keys {
			if v, ok := labels[k]; ok {
				return v
			}
		}
		return fallback
	}
	return lookup(canonicalNameLabels, workload), lookup(canonicalRevisionLabels, "latest")
}

// GroupLabels returns the labels of a WorkloadGroup's workloads as
// istioctl writes them into cluster.env: spec.metadata.labels, overridden
// by any spec.template.labels.
func GroupLabels(wg *networkingpb.WorkloadGroup) map[string]string {
	labels := maps.Clone(wg.GetMetadata().GetLabels())
	if labels == nil {
		labels = make(map[string]string)
	}
	maps.Copy(labels, wg.GetTemplate().GetLabels())
	return labels
}
