package routing

import (
	"fmt"
	"slices"
	"strings"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/locality"
)

// setWarnings collects what status shows: rules that failed to load,
// surprises in the rules (static and against the endpoints clients see),
// endpoints clients cannot use, and gateways that are down.
func (r *Routing) setWarnings(rules ruleSet, hosts map[string]*locality.Rule, clients *xds.Clients, gatewayOf map[string]string) {
	var out []*hubpb.PolicyWarning
	seen := make(map[string]bool)
	add := func(w *hubpb.PolicyWarning) {
		key := w.GetRule() + "\x00" + w.GetHost() + "\x00" + w.GetField() + "\x00" + w.GetMessage()
		if !seen[key] {
			seen[key] = true
			out = append(out, w)
		}
	}
	if rules.loadErr != "" {
		add(&hubpb.PolicyWarning{Message: "DestinationRules not loaded: " + rules.loadErr})
	}
	var byHost map[string][]locality.Priorities // made once, when a rule is used
	used := make(map[*locality.Rule][]string)
	for h, rule := range hosts {
		if rule != nil {
			used[rule] = append(used[rule], h)
		}
	}
	for _, rule := range rules.rules {
		for _, w := range rule.Warnings {
			add(&hubpb.PolicyWarning{Rule: rule.Ref(), Field: w.Field, Message: w.Message})
		}
		served := used[rule]
		if len(served) == 0 {
			add(&hubpb.PolicyWarning{Rule: rule.Ref(), Field: "spec.host", Message: fmt.Sprintf(
				"host %q matches no service of the federation (or a more specific rule wins), so this rule applies nowhere", rule.Host)})
			continue
		}
		slices.Sort(served)
		if byHost == nil {
			byHost = prioritiesByHost(clients)
		}
		for _, h := range served {
			for _, w := range rule.Check(clientEndpoints(byHost[h])) {
				add(&hubpb.PolicyWarning{Rule: rule.Ref(), Host: h, Field: w.Field, Message: w.Message})
			}
		}
	}
	for _, cw := range clients.Warnings {
		ref := ""
		if rule := hosts[cw.Host]; rule != nil {
			ref = rule.Ref()
		}
		field := cw.Warning.Field
		if cw.Subset != "" {
			field = strings.TrimSuffix("subset "+cw.Subset+": "+field, ": ")
		}
		add(&hubpb.PolicyWarning{Rule: ref, Host: cw.Host, Field: field, Message: cw.Warning.Message})
	}
	for _, addr := range r.prober.downList() {
		add(&hubpb.PolicyWarning{Message: fmt.Sprintf(
			"gateway %s of cluster %s misses its probes: clients treat the endpoints behind it as unhealthy", addr, gatewayOf[addr])})
	}
	r.mu.Lock()
	r.warnings = out
	r.mu.Unlock()
}

// prioritiesByHost groups what clients are sent by host (every port,
// without subsets), so that checking the rules of many hosts reads them
// once, not once per host.
func prioritiesByHost(clients *xds.Clients) map[string][]locality.Priorities {
	out := make(map[string][]locality.Priorities)
	for name, prio := range clients.Priorities {
		s, err := sni.ParseIstio(name)
		if err != nil || s.Subset != "" {
			continue
		}
		out[s.Host] = append(out[s.Host], prio)
	}
	return out
}

// clientEndpoints lists the endpoints of one host's priorities, once
// each.
func clientEndpoints(priorities []locality.Priorities) []locality.Endpoint {
	var out []locality.Endpoint
	seen := make(map[string]bool)
	for _, prio := range priorities {
		for _, g := range prio.Groups {
			for _, e := range g.Endpoints {
				if hp := e.HostPort(); !seen[hp] {
					seen[hp] = true
					out = append(out, e)
				}
			}
		}
	}
	return out
}
