package locality

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
)

// Special failoverPriority labels: Istio fills them from an endpoint's (and
// the client's) topology, not from pod labels.
const (
	LabelNetwork  = "topology.istio.io/network"
	LabelCluster  = "topology.istio.io/cluster"
	LabelRegion   = "topology.kubernetes.io/region"
	LabelZone     = "topology.kubernetes.io/zone"
	LabelSubzone  = "topology.istio.io/subzone"
	LabelHostname = "kubernetes.io/hostname"
)

// Envoy defaults that a policy falls back to.
const (
	// DefaultOverprovisioning is Envoy's overprovisioning factor, in
	// percent (1.4); Istio never changes it.
	DefaultOverprovisioning = 140
	// DefaultPanicThreshold is Envoy's healthy panic threshold in percent,
	// used when a rule has no outlierDetection.
	DefaultPanicThreshold = 50
)

// Distribute is one localityLbSetting.distribute entry.
type Distribute struct {
	From Pattern
	To   []Target // sorted by pattern text, so output never depends on map order
}

// Target is one "to" entry of a distribute rule.
type Target struct {
	Pattern Pattern
	Weight  uint32
}

// Failover is one localityLbSetting.failover entry (regions only).
type Failover struct {
	From, To string
}

// PriorityLabel is one failoverPriority entry: a label key, and the value
// to match when written as "key=value" (else the client's value).
type PriorityLabel struct {
	Key      string
	Value    string
	HasValue bool
}

func (l PriorityLabel) String() string {
	if l.HasValue {
		return l.Key + "=" + l.Value
	}
	return l.Key
}

// Policy is the locality part of one (merged) traffic policy.
type Policy struct {
	// Disabled is localityLbSetting.enabled: false: no locality behaviour.
	Disabled         bool
	Distribute       []Distribute
	Failover         []Failover
	FailoverPriority []PriorityLabel
	// OutlierDetection reports whether the policy has outlierDetection;
	// without it Istio applies neither failover nor failoverPriority.
	OutlierDetection bool
	// PanicThreshold is the healthy panic threshold in percent: Istio sets
	// outlierDetection.minHealthPercent (default 0), else Envoy's 50.
	PanicThreshold uint32
}

// DefaultPolicy is what applies with no DestinationRule: the mesh default
// (locality LB enabled, nothing configured, no outlier detection), so all
// endpoints share priority 0.
func DefaultPolicy() Policy { return Policy{PanicThreshold: DefaultPanicThreshold} }

// FailoverActive reports whether priorities other than 0 can be produced:
// Istio applies failover only with outlierDetection and without distribute.
func (p Policy) FailoverActive() bool {
	return !p.Disabled && p.OutlierDetection && len(p.Distribute) == 0
}

// LocalityWeighted reports whether locality weights must be honoured by
// Envoy (locality_weighted_lb_config), which Istio sets for distribute.
func (p Policy) LocalityWeighted() bool { return !p.Disabled && len(p.Distribute) > 0 }

// Warning is a surprise in a rule that Istio accepts: the rule still
// applies exactly as Istio would apply it, and status shows the warning.
type Warning struct {
	Rule    string // namespace/name, or "" when not from a rule
	Field   string // path in the spec
	Message string
}

func (w Warning) String() string {
	var b strings.Builder
	if w.Rule != "" {
		b.WriteString("DestinationRule " + w.Rule + ": ")
	}
	if w.Field != "" {
		b.WriteString(w.Field + ": ")
	}
	b.WriteString(w.Message)
	return b.String()
}

// Rule is one parsed DestinationRule.
type Rule struct {
	Name, Namespace string
	Host            string
	// Spec is the full parsed spec, for fields this package does not use.
	Spec *networkingpb.DestinationRule
	// Warnings found by parsing alone; Check adds the ones that depend on
	// the endpoints.
	Warnings []Warning
}

// Ref is "namespace/name".
func (r *Rule) Ref() string { return r.Namespace + "/" + r.Name }

// Policy returns the policy for a subset ("" for none) and a service port
// (0 for none), merged as Istio merges them: the subset's loadBalancer and
// outlierDetection replace the rule's, then port-level settings replace
// those. The rule was validated when parsed, so this cannot fail.
func (r *Rule) Policy(subset string, port uint32) Policy {
	top := r.Spec.GetTrafficPolicy()
	lb, od := top.GetLoadBalancer(), top.GetOutlierDetection()
	lb, od = portOverride(top, port, lb, od)
	for _, s := range r.Spec.GetSubsets() {
		if subset == "" || s.GetName() != subset {
			continue
		}
		if tp := s.GetTrafficPolicy(); tp != nil {
			if tp.GetLoadBalancer() != nil {
				lb = tp.GetLoadBalancer()
			}
			if tp.GetOutlierDetection() != nil {
				od = tp.GetOutlierDetection()
			}
			lb, od = portOverride(tp, port, lb, od)
		}
	}
	p, _ := policyFrom(lb.GetLocalityLbSetting(), od)
	return p
}

func portOverride(tp *networkingpb.TrafficPolicy, port uint32, lb *networkingpb.LoadBalancerSettings, od *networkingpb.OutlierDetection) (*networkingpb.LoadBalancerSettings, *networkingpb.OutlierDetection) {
	if port == 0 {
		return lb, od
	}
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() != port {
			continue
		}
		if pl.GetLoadBalancer() != nil {
			lb = pl.GetLoadBalancer()
		}
		if pl.GetOutlierDetection() != nil {
			od = pl.GetOutlierDetection()
		}
		break
	}
	return lb, od
}

// apiVersions are the networking versions accepted; the spec is the same.
var apiVersions = []string{"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"}

// ParseDestinationRules reads a YAML stream of DestinationRules. A
// document that is not a valid DestinationRule fails the whole stream with
// an error naming it (wrapping ErrInvalidRule); surprises Istio accepts
// become Rule.Warnings.
func ParseDestinationRules(data []byte) ([]*Rule, error) {
	return parseRules(data, false)
}

// ParseDestinationRulesIn is ParseDestinationRules for a stream that may
// hold other kinds too (a config directory's ServiceEntries): documents
// of another kind are skipped.
func ParseDestinationRulesIn(data []byte) ([]*Rule, error) {
	return parseRules(data, true)
}

func parseRules(data []byte, skipOthers bool) ([]*Rule, error) {
	// One decoder for every Kubernetes object federate reads: documents,
	// comments, kubectl output and List items alike.
	if skipOthers && !bytes.Contains(data, []byte("DestinationRule")) {
		return nil, nil // the common file of a config directory: no rule
	}
	objs, err := file.DecodeOnly("", data, file.KindDestinationRule)
	if err != nil {
		if fe, ok := errors.AsType[*file.FileError](err); ok {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidRule, place(fe.Document, fe.Item, fe.Line), fe.Err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidRule, err)
	}
	var rules []*Rule
	for _, obj := range objs {
		r, err := parseRule(obj, skipOthers)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidRule, place(obj.Document, obj.Item, obj.Line), err)
		}
		if r != nil {
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// place names a document, or an item of a List document, and its line.
func place(document, item, line int) string {
	switch {
	case document == 0:
		return fmt.Sprintf("line %d", line)
	case item > 0:
		return fmt.Sprintf("document %d item %d (line %d)", document, item, line)
	}
	return fmt.Sprintf("document %d (line %d)", document, line)
}

func parseRule(obj *file.Object, skipOthers bool) (*Rule, error) {
	if obj.Kind != "DestinationRule" && skipOthers && obj.Kind != "" {
		return nil, nil
	}
	if obj.Kind != "DestinationRule" {
		return nil, fmt.Errorf("kind %q is not DestinationRule", obj.Kind)
	}
	if !slices.Contains(apiVersions, obj.APIVersion) {
		return nil, fmt.Errorf("apiVersion %q: use one of %s", obj.APIVersion, strings.Join(apiVersions, ", "))
	}
	if obj.Metadata.Name == "" {
		return nil, errors.New("metadata.name is missing")
	}
	r := &Rule{Name: obj.Metadata.Name, Namespace: obj.Metadata.Namespace, Spec: &networkingpb.DestinationRule{}}
	if !obj.HasSpec() {
		return nil, fmt.Errorf("DestinationRule %s: spec is missing", r.Ref())
	}
	spec, err := normalizeDurations(obj.Spec, r.Spec.ProtoReflect().Descriptor())
	if err != nil {
		return nil, fmt.Errorf("DestinationRule %s: spec: %w", r.Ref(), err)
	}
	if err := protojson.Unmarshal(spec, r.Spec); err != nil {
		return nil, fmt.Errorf("DestinationRule %s: spec: %s", r.Ref(), protoMessage(err))
	}
	r.Host = r.Spec.GetHost()
	if r.Host == "" {
		return nil, fmt.Errorf("DestinationRule %s: spec.host is missing", r.Ref())
	}
	if err := registry.CheckExportTo(r.Spec.GetExportTo()); err != nil {
		return nil, fmt.Errorf("DestinationRule %s: spec.exportTo: %w", r.Ref(), err)
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("DestinationRule %s: %w", r.Ref(), err)
	}
	return r, nil
}

// protoMessage strips protojson's unstable "proto: " prefix and spacing.
func protoMessage(err error) string {
	m := err.Error()
	m = strings.TrimPrefix(m, "proto:")
	return strings.Join(strings.Fields(m), " ")
}

// validate checks every traffic policy in the rule and collects warnings.
func (r *Rule) validate() error {
	type located struct {
		path string
		tp   *networkingpb.TrafficPolicy
	}
	var all []located
	add := func(path string, tp *networkingpb.TrafficPolicy) {
		if tp == nil {
			return
		}
		all = append(all, located{path, tp})
		for i, pl := range tp.GetPortLevelSettings() {
			all = append(all, located{fmt.Sprintf("%s.portLevelSettings[%d]", path, i), &networkingpb.TrafficPolicy{
				LoadBalancer: pl.GetLoadBalancer(), OutlierDetection: pl.GetOutlierDetection(),
			}})
		}
	}
	add("spec.trafficPolicy", r.Spec.GetTrafficPolicy())
	for i, s := range r.Spec.GetSubsets() {
		add(fmt.Sprintf("spec.subsets[%d]", i), s.GetTrafficPolicy())
	}
	topOD := r.Spec.GetTrafficPolicy().GetOutlierDetection()
	for _, l := range all {
		od := l.tp.GetOutlierDetection()
		if od == nil {
			od = topOD // a subset inherits the rule's outlierDetection
		}
		path := l.path + ".loadBalancer.localityLbSetting"
		_, err := policyFrom(l.tp.GetLoadBalancer().GetLocalityLbSetting(), od)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		r.Warnings = append(r.Warnings, staticWarnings(r.Ref(), path, l.tp, od)...)
		if l.tp.GetLoadBalancer().GetZoneAwareLbSetting() != nil {
			r.Warnings = append(r.Warnings, Warning{r.Ref(), l.path + ".loadBalancer.zoneAwareLbSetting",
				"not supported by federate; the rule's other settings apply"})
		}
	}
	return nil
}

func staticWarnings(ref, path string, tp *networkingpb.TrafficPolicy, od *networkingpb.OutlierDetection) []Warning {
	lb := tp.GetLoadBalancer().GetLocalityLbSetting()
	var out []Warning
	disabled := lb.GetEnabled() != nil && !lb.GetEnabled().GetValue()
	switch {
	case disabled && (len(lb.GetDistribute()) > 0 || len(lb.GetFailover()) > 0 || len(lb.GetFailoverPriority()) > 0):
		out = append(out, Warning{ref, path, "enabled is false, so distribute, failover and failoverPriority are ignored"})
	case disabled:
	case len(lb.GetDistribute()) > 0 && len(lb.GetFailoverPriority()) > 0:
		out = append(out, Warning{ref, path + ".failoverPriority", "ignored because distribute is set (Istio applies only one)"})
	case (len(lb.GetFailover()) > 0 || len(lb.GetFailoverPriority()) > 0) && od == nil:
		out = append(out, Warning{ref, path, "failover and failoverPriority are inactive without outlierDetection: all endpoints stay at priority 0 and traffic never fails over (Istio requires outlierDetection; add it to this traffic policy)"})
	case lb == nil && tp.GetOutlierDetection() != nil:
		out = append(out, Warning{ref, strings.TrimSuffix(path, ".loadBalancer.localityLbSetting") + ".outlierDetection",
			"outlierDetection also turns on locality failover (the mesh default is enabled): traffic stays in the client's locality while it is healthy; set localityLbSetting.enabled: false to spread it evenly"})
	}
	return out
}

// policyFrom converts and validates a localityLbSetting with Istio's
// validation rules (pkg/config/validation validateLocalityLbSetting).
func policyFrom(lb *networkingpb.LocalityLoadBalancerSetting, od *networkingpb.OutlierDetection) (Policy, error) {
	p := Policy{PanicThreshold: DefaultPanicThreshold}
	if od != nil {
		p.OutlierDetection = true
		switch mh := od.GetMinHealthPercent(); {
		case mh < 0 || mh > 100:
			return p, fmt.Errorf("outlierDetection.minHealthPercent %d is outside 0-100", mh)
		default:
			p.PanicThreshold = uint32(mh)
		}
	}
	if lb == nil {
		return p, nil
	}
	if lb.GetEnabled() != nil && !lb.GetEnabled().GetValue() {
		p.Disabled = true
	}
	if len(lb.GetDistribute()) > 0 && len(lb.GetFailover()) > 0 {
		return p, errors.New("distribute and failover cannot both be set: keep one")
	}
	if len(lb.GetFailover()) > 0 {
		for _, l := range lb.GetFailoverPriority() {
			switch key, _, _ := strings.Cut(l, "="); key {
			case LabelRegion, LabelZone, LabelSubzone:
				return p, fmt.Errorf("failoverPriority label %q cannot be combined with failover: drop one", key)
			}
		}
	}
	var froms []Pattern
	for i, d := range lb.GetDistribute() {
		from, err := ParsePattern(d.GetFrom())
		if err != nil {
			return p, fmt.Errorf("distribute[%d].from: %w", i, err)
		}
		for j, prev := range froms {
			if prev.overlaps(from) {
				return p, fmt.Errorf("distribute[%d].from %q overlaps distribute[%d].from %q: a client locality must match one entry", i, from, j, prev)
			}
		}
		froms = append(froms, from)
		dist := Distribute{From: from}
		var total uint64
		for _, key := range slices.Sorted(maps.Keys(d.GetTo())) {
			w := d.GetTo()[key]
			to, err := ParsePattern(key)
			if err != nil {
				return p, fmt.Errorf("distribute[%d].to: %w", i, err)
			}
			if w < 1 || w > 100 {
				return p, fmt.Errorf("distribute[%d].to[%q]: weight %d must be 1-100", i, key, w)
			}
			for _, t := range dist.To {
				if t.Pattern.overlaps(to) {
					return p, fmt.Errorf("distribute[%d].to: %q overlaps %q: a locality must match one entry", i, key, t.Pattern)
				}
			}
			total += uint64(w)
			dist.To = append(dist.To, Target{Pattern: to, Weight: w})
		}
		if len(dist.To) == 0 {
			return p, fmt.Errorf("distribute[%d].to is empty: list the localities that receive traffic", i)
		}
		if total != 100 {
			return p, fmt.Errorf("distribute[%d].to: weights sum to %d, not 100 (Istio rejects this rule)", i, total)
		}
		p.Distribute = append(p.Distribute, dist)
	}
	for i, f := range lb.GetFailover() {
		switch {
		case f.GetFrom() == "" || f.GetTo() == "":
			return p, fmt.Errorf("failover[%d]: from and to must both name a region", i)
		case strings.ContainsAny(f.GetFrom()+f.GetTo(), "/*"):
			return p, fmt.Errorf("failover[%d]: from %q and to %q must be plain regions, without '/' or '*'", i, f.GetFrom(), f.GetTo())
		case f.GetFrom() == f.GetTo():
			return p, fmt.Errorf("failover[%d]: from and to are both %q: name two different regions", i, f.GetFrom())
		}
		if _, err := Parse(f.GetFrom() + "/" + f.GetTo()); err != nil {
			return p, fmt.Errorf("failover[%d]: %w", i, err)
		}
		p.Failover = append(p.Failover, Failover{From: f.GetFrom(), To: f.GetTo()})
	}
	for i, l := range lb.GetFailoverPriority() {
		pl, err := parsePriorityLabel(l)
		if err != nil {
			return p, fmt.Errorf("failoverPriority[%d]: %w", i, err)
		}
		p.FailoverPriority = append(p.FailoverPriority, pl)
	}
	return p, nil
}

func parsePriorityLabel(s string) (PriorityLabel, error) {
	key, value, hasValue := strings.Cut(s, "=")
	if strings.Contains(value, "=") {
		return PriorityLabel{}, fmt.Errorf("%q has more than one '=': use key or key=value", s)
	}
	if err := checkLabelKey(key); err != nil {
		return PriorityLabel{}, fmt.Errorf("%q: %w", s, err)
	}
	return PriorityLabel{Key: key, Value: value, HasValue: hasValue}, nil
}

// checkLabelKey checks a Kubernetes label key: an optional DNS prefix and
// a name of letters, digits, '-', '_' and '.'.
func checkLabelKey(key string) error {
	name := key
	if prefix, n, ok := strings.Cut(key, "/"); ok {
		if prefix == "" || len(prefix) > 253 || strings.ContainsFunc(prefix, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.')
		}) {
			return errors.New("the label prefix must be a DNS name")
		}
		name = n
	}
	if name == "" || len(name) > 63 {
		return errors.New("a label name must be 1-63 characters")
	}
	if strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return errors.New("a label name is letters, digits, '-', '_' and '.'")
	}
	return nil
}

// normalizeDurations rewrites Duration fields written the Kubernetes way
// ("1m", "1h30m") into protojson's seconds ("60s"), as Istio accepts both.
func normalizeDurations(raw json.RawMessage, md protoreflect.MessageDescriptor) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	v, err := walkDurations(v, md)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func walkDurations(v any, md protoreflect.MessageDescriptor) (any, error) {
	if md.FullName() == "google.protobuf.Duration" {
		s, ok := v.(string)
		if !ok || strings.HasSuffix(s, "s") && !strings.ContainsAny(s, "hmµun") {
			return v, nil // protojson reports anything else
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q: use a value like 500ms, 30s or 1m", s)
		}
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s", nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return v, nil
	}
	for k, val := range obj {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		if fd == nil {
			continue
		}
		var err error
		switch {
		case fd.IsMap():
			if vd := fd.MapValue(); vd.Kind() == protoreflect.MessageKind {
				if m, ok := val.(map[string]any); ok {
					for mk, mv := range m {
						if m[mk], err = walkDurations(mv, vd.Message()); err != nil {
							return nil, err
						}
					}
				}
			}
		case fd.Kind() != protoreflect.MessageKind:
		case fd.IsList():
			if list, ok := val.([]any); ok {
				for i := range list {
					if list[i], err = walkDurations(list[i], fd.Message()); err != nil {
						return nil, err
					}
				}
			}
		default:
			if obj[k], err = walkDurations(val, fd.Message()); err != nil {
				return nil, err
			}
		}
	}
	return obj, nil
}
