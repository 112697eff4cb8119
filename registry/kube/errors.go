package kube

import "errors"

// ErrNoWorkloadGroup is returned by RegisterWorkload when the VM names a
// WorkloadGroup that does not exist.
var ErrNoWorkloadGroup = errors.New("kube: no such WorkloadGroup")
