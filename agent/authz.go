package agent

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	securitypb "istio.io/api/security/v1beta1"

	"github.com/federate/federate/registry/file"
)

// Policy is an Istio AuthorizationPolicy (security.istio.io) that applies
// to this workload.
type Policy struct {
	Name string
	Spec *securitypb.AuthorizationPolicy
}

// Policies decides who may call the workload, with Istio's semantics for
// the TCP attributes a sidecar sees: DENY policies first, then, if any
// ALLOW policy applies, the caller must match one of its rules. With no
// policy, any caller that verified against a federated bundle is allowed.
type Policies []Policy

// rootNamespace holds policies that apply to every workload, as in Istio.
const rootNamespace = "istio-system"

// LoadPolicies reads the AuthorizationPolicy documents of path and keeps
// those that select a workload with labels in namespace. A missing file
// means no policy.
func LoadPolicies(path, namespace string, labels map[string]string) (Policies, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	objs, err := file.Decode(path, data)
	if err != nil {
		return nil, err
	}
	var out Policies
	for _, o := range objs {
		p, err := policyOf(o)
		if err != nil {
			return nil, &FileError{Path: path, Err: fmt.Errorf("document %d (line %d): %w", o.Document, o.Line, err)}
		}
		sel := p.Spec.GetSelector().GetMatchLabels()
		if ns := o.Metadata.Namespace; ns != namespace && ns != rootNamespace || !subset(sel, labels) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// policyOf checks one decoded AuthorizationPolicy against what the VM
// sidecar can enforce.
func policyOf(obj *file.Object) (Policy, error) {
	spec, ok := obj.SpecProto().(*securitypb.AuthorizationPolicy)
	if obj.Kind != file.KindAuthorizationPolicy || !ok {
		return Policy{}, fmt.Errorf("kind %q, apiVersion %q: only security.istio.io AuthorizationPolicy belongs here", obj.Kind, obj.APIVersion)
	}
	ref := "AuthorizationPolicy " + obj.Metadata.Name
	if a := spec.GetAction(); a != securitypb.AuthorizationPolicy_ALLOW && a != securitypb.AuthorizationPolicy_DENY {
		return Policy{}, fmt.Errorf("%s: action %s is not supported by the VM sidecar: use ALLOW or DENY", ref, a)
	}
	for i, r := range spec.GetRules() {
		if len(r.GetWhen()) > 0 {
			return Policy{}, fmt.Errorf("%s: rules[%d].when is not supported by the VM sidecar (it sees TCP, not requests)", ref, i)
		}
		for j, to := range r.GetTo() {
			op := to.GetOperation()
			if len(op.GetHosts())+len(op.GetNotHosts())+len(op.GetMethods())+len(op.GetNotMethods())+len(op.GetPaths())+len(op.GetNotPaths()) > 0 {
				return Policy{}, fmt.Errorf("%s: rules[%d].to[%d]: only ports and notPorts apply to TCP; remove hosts, methods and paths", ref, i, j)
			}
		}
	}
	return Policy{Name: obj.Metadata.Namespace + "/" + obj.Metadata.Name, Spec: spec}, nil
}

// Allow reports whether caller may connect to port, and why not.
func (ps Policies) Allow(caller spiffeid.ID, port uint32) error {
	allows := 0
	for _, p := range ps {
		if p.Spec.GetAction() != securitypb.AuthorizationPolicy_DENY {
			allows++
			continue
		}
		if matchesAny(p.Spec.GetRules(), caller, port) {
			return fmt.Errorf("denied by AuthorizationPolicy %s", p.Name)
		}
	}
	if allows == 0 {
		return nil
	}
	for _, p := range ps {
		if p.Spec.GetAction() == securitypb.AuthorizationPolicy_ALLOW && matchesAny(p.Spec.GetRules(), caller, port) {
			return nil
		}
	}
	return errors.New("no ALLOW AuthorizationPolicy matches")
}

func matchesAny(rules []*securitypb.Rule, caller spiffeid.ID, port uint32) bool {
	return slices.ContainsFunc(rules, func(r *securitypb.Rule) bool { return matches(r, caller, port) })
}

// matches: every from (any source) and every to (any operation) must match.
func matches(r *securitypb.Rule, caller spiffeid.ID, port uint32) bool {
	principal := strings.TrimPrefix(caller.String(), "spiffe://")
	ns := ""
	if rest, ok := strings.CutPrefix(caller.Path(), "/ns/"); ok {
		ns, _, _ = strings.Cut(rest, "/")
	}
	if len(r.GetFrom()) > 0 && !slices.ContainsFunc(r.GetFrom(), func(f *securitypb.Rule_From) bool {
		s := f.GetSource()
		return field(s.GetPrincipals(), s.GetNotPrincipals(), principal) &&
			field(s.GetNamespaces(), s.GetNotNamespaces(), ns) &&
			field(s.GetTrustDomains(), s.GetNotTrustDomains(), caller.TrustDomain().String())
	}) {
		return false
	}
	p := strconv.FormatUint(uint64(port), 10)
	if len(r.GetTo()) > 0 && !slices.ContainsFunc(r.GetTo(), func(t *securitypb.Rule_To) bool {
		op := t.GetOperation()
		return field(op.GetPorts(), op.GetNotPorts(), p)
	}) {
		return false
	}
	return true
}

// field matches a value against Istio's values and notValues lists, with
// "*", "prefix*" and "*suffix" patterns.
func field(values, notValues []string, v string) bool {
	if len(values) > 0 && !slices.ContainsFunc(values, func(p string) bool { return match(p, v) }) {
		return false
	}
	return !slices.ContainsFunc(notValues, func(p string) bool { return match(p, v) })
}

func match(pattern, v string) bool {
	switch {
	case pattern == "*":
		return v != ""
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(v, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(v, pattern[:len(pattern)-1])
	}
	return pattern == v
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
