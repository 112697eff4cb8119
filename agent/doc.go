// Package agent is the VM agent: bootstrap from the files 'federate vm
// configure' writes, certificates, WorkloadEntry auto-registration, health
// probes and the sidecar proxy.
package agent
