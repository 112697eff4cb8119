// Package file is the registry source for clusters without Kubernetes: VMs,
// bare-metal hosts and anything else whose services are written down rather
// than discovered.
//
// It owns the file format and its rules. A directory holds YAML files
// (*.yaml, *.yml) of Istio ServiceEntry and WorkloadEntry objects in their
// Kubernetes form, several per file separated by "---". A ServiceEntry names
// exactly one host and its ports; its endpoints are listed inline or come from
// the WorkloadEntries its workloadSelector picks in the same namespace. Only
// ServiceEntries marked "export: true" leave the cluster.
//
// Parse checks one file, Load turns a whole directory into the exported
// registrypb.Service set (all of it or, on any error, none of it), Dir reads
// a directory again and again keeping each file's last good documents, and
// Source polls the directory through a Dir and reports each new set. Files
// are best written by atomic rename; a file rewritten in place is empty for
// a moment, and a Dir keeps what it held before.
//
// The package is also the one home of the directory listing and of the
// Kubernetes object envelope: ReadDir and ParseDir read a control plane's
// config directory for every reader of it (the DestinationRules and the VM
// workload selectors too), and Object with DecodeObject is the envelope
// every YAML object federate reads is decoded into.
package file
