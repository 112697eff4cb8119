package registry

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ImportAll is the import that names every service.
const ImportAll = "*"

// Scope is what a cluster imports: every service, or the services of the
// named hostnames. Every cluster's ClusterInfo record is in every scope:
// gateways, bundles and trust are needed by all. A nil *Scope is every
// service, so that a member that says nothing imports everything.
type Scope struct {
	hosts map[string]bool
}

// NewScope returns the scope of hosts; "*" among them, or nil hosts, is
// every service (a nil *Scope). An empty, non-nil list imports no service.
func NewScope(hosts []string) *Scope {
	if hosts == nil || slices.Contains(hosts, ImportAll) {
		return nil
	}
	s := &Scope{hosts: make(map[string]bool, len(hosts))}
	for _, h := range hosts {
		if h = strings.TrimSpace(h); h != "" {
			s.hosts[h] = true
		}
	}
	return s
}

// ParseImports checks an import list as a user wrote it: hostnames
// separated by commas, or "*".
func ParseImports(list string) ([]string, error) {
	out := []string{}
	for _, h := range strings.Split(list, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out, CheckImports(out)
}

// CheckImports checks that every import is a service hostname or "*".
func CheckImports(hosts []string) error {
	for _, h := range hosts {
		if h != ImportAll && (h == "" || strings.ContainsAny(h, " /*:,") || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".")) {
			return fmt.Errorf("registry: import %q is not a service hostname (like reviews.shop.svc.cluster.local) or \"*\": fix the import list", h)
		}
	}
	return nil
}

// All reports whether the scope is every service.
func (s *Scope) All() bool { return s == nil }

// Includes reports whether the record of key is in the scope.
func (s *Scope) Includes(key string) bool {
	return s == nil || key == InfoKey || s.hosts[key]
}

// Hosts returns the imported hostnames, sorted; nil for every service.
func (s *Scope) Hosts() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.hosts))
}

// List returns the hostnames as an import list: ["*"] for every service.
func (s *Scope) List() []string {
	if s == nil {
		return []string{ImportAll}
	}
	return s.Hosts()
}

// Covers reports whether every service of o is in s.
func (s *Scope) Covers(o *Scope) bool {
	if s == nil {
		return true
	}
	if o == nil {
		return false
	}
	for h := range o.hosts {
		if !s.hosts[h] {
			return false
		}
	}
	return true
}

// Equal reports whether s and o import the same services.
func (s *Scope) Equal(o *Scope) bool { return s.Covers(o) && o.Covers(s) }

// Beyond returns the hosts of s that o does not cover, sorted. It is nil
// when o covers s; s must not be every service unless o is too.
func (s *Scope) Beyond(o *Scope) []string {
	var out []string
	for _, h := range s.Hosts() {
		if !o.Includes(h) {
			out = append(out, h)
		}
	}
	return out
}

// Intersect returns the services in both s and o.
func (s *Scope) Intersect(o *Scope) *Scope {
	switch {
	case s == nil:
		return o
	case o == nil:
		return s
	}
	out := &Scope{hosts: make(map[string]bool)}
	for h := range s.hosts {
		if o.hosts[h] {
			out.hosts[h] = true
		}
	}
	return out
}
