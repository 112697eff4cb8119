package file

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Kinds federate reads, by name.
const (
	KindServiceEntry        = "ServiceEntry"
	KindWorkloadEntry       = "WorkloadEntry"
	KindWorkloadGroup       = "WorkloadGroup"
	KindDestinationRule     = "DestinationRule"
	KindSidecar             = "Sidecar"
	KindAuthorizationPolicy = "AuthorizationPolicy"
	KindServiceExport       = "ServiceExport"
	KindServiceImport       = "ServiceImport"
)

// serviceExportVersion is the MCS API version of a ServiceExport that
// federate writes, the CRD's storage version; v1alpha1 reads too.
var serviceExportVersion = mcsv1beta1.SchemeGroupVersion.String()

type newObject = func() runtime.Object

// knownKinds maps a kind and its apiVersion to its typed object; the first
// version listed for a kind (in versionOrder) is the one to suggest.
var knownKinds = map[string]map[string]newObject{
	KindServiceEntry: {
		"networking.istio.io/v1":       func() runtime.Object { return new(networkingv1.ServiceEntry) },
		"networking.istio.io/v1beta1":  func() runtime.Object { return new(networkingv1beta1.ServiceEntry) },
		"networking.istio.io/v1alpha3": func() runtime.Object { return new(networkingv1alpha3.ServiceEntry) },
	},
	KindWorkloadEntry: {
		"networking.istio.io/v1":       func() runtime.Object { return new(networkingv1.WorkloadEntry) },
		"networking.istio.io/v1beta1":  func() runtime.Object { return new(networkingv1beta1.WorkloadEntry) },
		"networking.istio.io/v1alpha3": func() runtime.Object { return new(networkingv1alpha3.WorkloadEntry) },
	},
	KindWorkloadGroup: {
		"networking.istio.io/v1":       func() runtime.Object { return new(networkingv1.WorkloadGroup) },
		"networking.istio.io/v1beta1":  func() runtime.Object { return new(networkingv1beta1.WorkloadGroup) },
		"networking.istio.io/v1alpha3": func() runtime.Object { return new(networkingv1alpha3.WorkloadGroup) },
	},
	KindDestinationRule: {
		"networking.istio.io/v1":       func() runtime.Object { return new(networkingv1.DestinationRule) },
		"networking.istio.io/v1beta1":  func() runtime.Object { return new(networkingv1beta1.DestinationRule) },
		"networking.istio.io/v1alpha3": func() runtime.Object { return new(networkingv1alpha3.DestinationRule) },
	},
	KindSidecar: {
		"networking.istio.io/v1":       func() runtime.Object { return new(networkingv1.Sidecar) },
		"networking.istio.io/v1beta1":  func() runtime.Object { return new(networkingv1beta1.Sidecar) },
		"networking.istio.io/v1alpha3": func() runtime.Object { return new(networkingv1alpha3.Sidecar) },
	},
	KindAuthorizationPolicy: {
		"security.istio.io/v1":      func() runtime.Object { return new(securityv1.AuthorizationPolicy) },
		"security.istio.io/v1beta1": func() runtime.Object { return new(securityv1beta1.AuthorizationPolicy) },
	},
	KindServiceExport: {
		serviceExportVersion:                    func() runtime.Object { return new(mcsv1beta1.ServiceExport) },
		mcsv1alpha1.SchemeGroupVersion.String(): func() runtime.Object { return new(mcsv1alpha1.ServiceExport) },
	},
	KindServiceImport: {
		serviceExportVersion:                    func() runtime.Object { return new(mcsv1beta1.ServiceImport) },
		mcsv1alpha1.SchemeGroupVersion.String(): func() runtime.Object { return new(mcsv1alpha1.ServiceImport) },
	},
}

// versionsOf lists the apiVersions of a known kind, the newest first.
func versionsOf(kind string) []string {
	var vs []string
	for v := range knownKinds[kind] {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(a, b string) int { return versionRank(a) - versionRank(b) })
	return vs
}

// versionRank orders v1 before v1beta1 before v1alpha3 (and v1alpha1).
func versionRank(v string) int {
	switch {
	case strings.HasSuffix(v, "/v1"):
		return 0
	case strings.Contains(v, "beta"):
		return 1
	}
	return 2
}

// KnownKind reports whether Decode types objects of kind.
func KnownKind(kind string) bool {
	_, ok := knownKinds[kind]
	return ok
}
