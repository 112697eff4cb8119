package registry

import (
	"fmt"
	"slices"
)

// Values of an Istio exportTo list with a meaning of their own; any other
// value names a namespace.
const (
	ExportToOwnNamespace = "."
	ExportToAll          = "*"
	ExportToNone         = "~"
)

// CheckExportTo checks an Istio exportTo list as Istio's validation does:
// each value is ".", "*", "~" or a namespace name, none repeats, and "*"
// or "~" stand alone.
func CheckExportTo(list []string) error {
	for i, v := range list {
		switch v {
		case ExportToOwnNamespace, ExportToAll, ExportToNone:
		default:
			if err := ValidClusterName(v); err != nil {
				return fmt.Errorf("registry: exportTo value %q is not \".\", \"*\", \"~\" or a namespace name (a DNS label): fix value %d", v, i)
			}
		}
		if slices.Contains(list[:i], v) {
			return fmt.Errorf("registry: exportTo value %q is listed twice: list each namespace once", v)
		}
	}
	for _, alone := range []string{ExportToAll, ExportToNone} {
		if len(list) > 1 && slices.Contains(list, alone) {
			return fmt.Errorf("registry: exportTo %q cannot be combined with other values: use it alone", alone)
		}
	}
	return nil
}

// ExportedTo reports whether an object of namespace owner with the
// exportTo list is visible in namespace client. An empty list is Istio's
// default, "*". Namespaces are the same across clusters, as in Istio's
// multi-cluster model.
func ExportedTo(list []string, owner, client string) bool {
	if len(list) == 0 {
		return true
	}
	for _, v := range list {
		switch v {
		case ExportToAll:
			return true
		case ExportToOwnNamespace:
			if client == owner {
				return true
			}
		case ExportToNone:
		default:
			if client == v {
				return true
			}
		}
	}
	return false
}
