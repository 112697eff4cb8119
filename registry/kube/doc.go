// Package kube is the Kubernetes source of the registry. It watches
// Services, EndpointSlices, Namespaces, Nodes, MCS ServiceExports and Istio
// ServiceEntries, WorkloadGroups, WorkloadEntries and DestinationRules with
// client-go informers, and turns every exported Service, and every exported
// Istio ServiceEntry with the WorkloadEntries its selector picks, into a
// registry.Service: a ServiceExport names a Service when one exists, else
// a ServiceEntry, converted by the file source's rules (registry/file).
//
// It also writes back what users look for in their cluster: a ServiceImport
// (with EndpointSlices that point at the exporting clusters' gateways) for
// every service the federation exports, the Valid, Ready and Conflict
// conditions of each ServiceExport, and the WorkloadEntries of VMs that
// registered themselves.
//
// The gateway and agent binaries must not import it: it links client-go.
package kube
