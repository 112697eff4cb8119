package membership

import (
	"fmt"
	"net"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/federate/federate/eastwest/sni"
)

// MaxServingNames bounds the extra names a cluster credential may carry.
const MaxServingNames = 16

// CheckServingName accepts what a control plane may ask the hub to put in
// its credential for clients that dial it by name: an IP address, or a
// lowercase DNS name without wildcards outside the federation's internal
// names (sni.InternalSuffix), which the hub gives out itself.
func CheckServingName(n string) error {
	if net.ParseIP(n) != nil {
		return nil
	}
	if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
		return fmt.Errorf("membership: serving name %q: %s", n, strings.Join(errs, "; "))
	}
	if strings.HasSuffix(n, sni.InternalSuffix) {
		return fmt.Errorf("membership: serving name %q: names under %s are the federation's own; every control plane gets controlplane.<cluster>%s", n, sni.InternalSuffix, sni.InternalSuffix)
	}
	return nil
}
