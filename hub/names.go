package hub

import (
	"fmt"
	"slices"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// credentialNames are the SANs of a cluster credential besides its SPIFFE
// ID: first the one trust domain the cluster may speak for (members read
// it there), then the control plane's internal name, which clients verify
// when they reach it through the gateway, then the names and addresses
// the cluster asks for in its request (--serving-name), which clients
// verify when they dial the control plane by them. The internal names of
// the federation are the hub's to give: a request for another is refused.
func credentialNames(cluster, td string, csr []byte) ([]string, error) {
	requested, err := trust.CSRNames(csr)
	if err != nil {
		return nil, err
	}
	if len(requested) > membership.MaxServingNames {
		return nil, fmt.Errorf("the request asks for %d names; the limit is %d", len(requested), membership.MaxServingNames)
	}
	internal := sni.Internal(sni.ControlPlane, cluster)
	names := []string{td, internal}
	for _, n := range requested {
		if n == internal {
			continue
		}
		if err := membership.CheckServingName(n); err != nil {
			return nil, err
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names, nil
}
