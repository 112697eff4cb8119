package registry

// WorkloadSelector is how a service picks its workloads (VMs, whose
// agents register them), and where they receive its ports.
type WorkloadSelector struct {
	// Labels are the labels a workload must have: a ServiceEntry's
	// workloadSelector, a Service's selector.
	Labels map[string]string
	// TargetPorts are, by service port name, the ports on which its
	// endpoints receive it, where not the port's own number (a
	// ServiceEntry's or a Service's targetPort). A WorkloadGroup's
	// template ports win over them, as a WorkloadEntry's do in Istio.
	TargetPorts map[string]uint32
}

// Selects reports whether a workload with labels is one of the service's.
func (s WorkloadSelector) Selects(labels map[string]string) bool {
	for k, v := range s.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
