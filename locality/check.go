package locality

import (
	"fmt"
	"slices"
	"strings"
)

// Check returns the warnings of a rule that depend on the endpoints it
// applies to: failover targets no endpoint is in, failoverPriority labels
// no endpoint carries, and localities distribute leaves without traffic.
// Parse-time warnings are in r.Warnings. Subsets are checked against the
// endpoints their labels select.
func (r *Rule) Check(endpoints []Endpoint) []Warning {
	out := CheckPolicy(r.Policy("", 0), endpoints)
	for _, s := range r.Spec.GetSubsets() {
		if s.GetTrafficPolicy() == nil {
			continue
		}
		var selected []Endpoint
		for _, e := range endpoints {
			if selects(s.GetLabels(), e.Labels) {
				selected = append(selected, e)
			}
		}
		for _, w := range CheckPolicy(r.Policy(s.GetName(), 0), selected) {
			w.Field = "subset " + s.GetName() + ": " + w.Field
			out = append(out, w)
		}
	}
	for i := range out {
		out[i].Rule = r.Ref()
	}
	return out
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// CheckPolicy is Check for one policy and the endpoints it governs.
func CheckPolicy(p Policy, endpoints []Endpoint) []Warning {
	if p.Disabled {
		return nil
	}
	var out []Warning
	regions := make(map[string]bool)
	for _, e := range endpoints {
		regions[e.Locality.Region] = true
	}
	if len(p.Distribute) == 0 {
		for i, f := range p.Failover {
			if !regions[f.To] {
				out = append(out, Warning{Field: fmt.Sprintf("failover[%d]", i), Message: fmt.Sprintf(
					"no endpoint is in region %q, so clients in %q have no failover target and reach other regions only as a last resort; known regions: %s",
					f.To, f.From, known(regions))})
			}
		}
	}
	if len(p.Distribute) == 0 {
		for i, l := range p.FailoverPriority {
			carried := false
			for _, e := range endpoints {
				v, ok := topologyLabels(e.Labels, e.Locality, e.Network, e.Cluster)[l.Key]
				if ok && (!l.HasValue || v == l.Value) {
					carried = true
					break
				}
			}
			if !carried {
				msg := fmt.Sprintf("no endpoint carries label %q, so this entry never separates endpoints", l)
				if l.Key != LabelNetwork && l.Key != LabelCluster {
					msg += "; endpoints reached through a gateway carry only the labels all endpoints behind it share"
				}
				out = append(out, Warning{Field: fmt.Sprintf("failoverPriority[%d]", i), Message: msg})
			}
		}
	}
	for i, d := range p.Distribute {
		groups := byLocality(endpoints)
		var dropped []string
		for _, g := range groups {
			if !slices.ContainsFunc(d.To, func(t Target) bool { return t.Pattern.Match(g.Locality) }) {
				name := g.Locality.String()
				if name == "" {
					name = "endpoints with no locality"
				}
				dropped = append(dropped, fmt.Sprintf("%s (%d)", name, len(g.Endpoints)))
			}
		}
		switch {
		case len(dropped) == len(groups) && len(groups) > 0:
			out = append(out, Warning{Field: fmt.Sprintf("distribute[%d]", i), Message: fmt.Sprintf(
				"no to pattern matches any endpoint: Istio would send clients in %q nowhere; federate keeps every endpoint instead", d.From)})
		case len(dropped) > 0:
			out = append(out, Warning{Field: fmt.Sprintf("distribute[%d]", i), Message: fmt.Sprintf(
				"clients in %q send no traffic to %s: distribute drops localities no to pattern matches (as Istio does)", d.From, strings.Join(dropped, ", "))})
		}
		for _, t := range d.To {
			if !slices.ContainsFunc(groups, func(g Group) bool { return t.Pattern.Match(g.Locality) }) {
				out = append(out, Warning{Field: fmt.Sprintf("distribute[%d].to[%q]", i, t.Pattern), Message: fmt.Sprintf(
					"matches no endpoint, so its weight %d goes nowhere and the localities that do match share the traffic in proportion to their weights", t.Weight)})
			}
		}
	}
	return out
}

func known(set map[string]bool) string {
	var names []string
	for k := range set {
		if k == "" {
			k = "(none)"
		}
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
