package trust

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NamespaceOf returns the namespace of an ID of the form /ns/<ns>/..., or "".
func NamespaceOf(id spiffeid.ID) string {
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}
