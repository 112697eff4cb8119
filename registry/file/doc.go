// Package file is the registry source for clusters without Kubernetes: VMs,
// bare-metal hosts and anything else whose services are written down rather
// than discovered.
//
// It owns the file format and its rules. A directory holds YAML files
// (*.yaml, *.yml) of Istio ServiceEntry and WorkloadEntry objects and MCS
// ServiceExports in their Kubernetes form, exactly as kubectl applies them
// and prints them: several per file separated by "---", comments, `kind:
// List`, status and server-set metadata. A ServiceEntry names exactly one
// host and its ports; its endpoints are listed inline or come from the
// WorkloadEntries its workloadSelector picks in the same namespace. Only
// ServiceEntries with a ServiceExport of the same name and namespace leave
// the cluster, as Services do on Kubernetes; the others are logged and
// reported by Source.NotExported.
//
// Parse checks one file, Load turns a whole directory into the exported
// registrypb.Service set (all of it or, on any error, none of it), Dir reads
// a directory again and again keeping each file's last good documents, and
// Source polls the directory through a Dir and reports each new set. Files
// are best written by atomic rename; a file rewritten in place is empty for
// a moment, and a Dir keeps what it held before.
//
// The package is also the one home of the directory listing and of the
// Kubernetes object decoder: ReadDir and ParseDir read a control plane's
// config directory for every reader of it (the DestinationRules and the VM
// workload selectors too), and Decode reads every YAML file federate reads
// with apimachinery's YAML reader into istio.io/client-go and mcs-api typed
// objects (DecodeObject reads one document's envelope leniently).
package file
