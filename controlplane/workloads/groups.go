package workloads

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/store"
)

// selectorCache keeps the workload selectors last read whole from the
// config directory.
type selectorCache struct {
	mu      sync.Mutex                           // guards the fields below
	dir     *file.Dir                            // re-parses only the files that changed
	good    map[string]registry.WorkloadSelector // by host; read-only once stored
	failing string                               // the problem last logged, until a read succeeds
}

// selectors returns Config.Selectors, else the workloadSelector of every
// ServiceEntry in the config directory, by host; callers must not change
// it. It reads the directory as the file source does. When a file does
// not read or parse, the selectors last read whole stay in force, as the
// file source keeps its last good services, and the problem is logged
// once, until it changes or the files read again.
func (w *Server) selectors() map[string]registry.WorkloadSelector {
	if w.cfg.Selectors != nil {
		return w.cfg.Selectors()
	}
	if w.cfg.ConfigDir == "" {
		return nil
	}
	c := &w.sel
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == nil {
		// The problems are logged below, once, as the selectors' own.
		c.dir = file.NewDir(w.cfg.ConfigDir, slog.New(slog.DiscardHandler))
	}
	// A Dir reads the directory as ParseDir does, but parses a file again
	// only when its content changed: this runs on every publish.
	docs, err := c.dir.Parse()
	if err == nil {
		err = c.dir.Broken()
	}
	if err != nil {
		if msg := err.Error(); msg != c.failing {
			c.failing = msg
			w.log.Warn("cannot read the workload selectors of the config directory; the last good ones stay in force", "dir", w.cfg.ConfigDir, "err", err)
		}
		return c.good
	}
	if c.failing != "" {
		c.failing = ""
		w.log.Info("the workload selectors of the config directory read again", "dir", w.cfg.ConfigDir)
	}
	out := make(map[string]registry.WorkloadSelector)
	for _, d := range docs {
		if se := d.ServiceEntry; se != nil && len(se.GetWorkloadSelector().GetLabels()) > 0 {
			out[se.GetHosts()[0]] = file.WorkloadSelector(se)
		}
	}
	c.good = out
	return out
}

// workloadGroup is a WorkloadGroup as the control plane stores it.
type workloadGroup struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Spec      json.RawMessage `json:"spec"`

	spec *networkingpb.WorkloadGroup
}

// ParseWorkloadGroupSpec decodes and checks a WorkloadGroup spec (JSON) of
// namespace/name; its errors name the field and what to do.
func ParseWorkloadGroupSpec(namespace, name string, spec []byte) (*networkingpb.WorkloadGroup, error) {
	ref := "WorkloadGroup " + namespace + "/" + name
	if !dnsLabel(namespace) {
		return nil, fmt.Errorf("%s: metadata.namespace %q is not a valid namespace: use up to 63 lowercase letters, digits and '-'", ref, namespace)
	}
	// The entry is named <group>-<ip>: keep room for an IPv6 address.
	if !dnsLabel(name) || len(name) > 63-40 {
		return nil, fmt.Errorf("%s: metadata.name %q must be up to 23 lowercase letters, digits and '-', so that <name>-<ip> is a valid name", ref, name)
	}
	wg := new(networkingpb.WorkloadGroup)
	if err := protojson.Unmarshal(spec, wg); err != nil {
		return nil, fmt.Errorf("%s: spec: %s", ref, strings.TrimPrefix(err.Error(), "proto: "))
	}
	t := wg.GetTemplate()
	if t == nil {
		return nil, fmt.Errorf("%s: spec.template is missing: it holds the serviceAccount and ports of the VMs", ref)
	}
	if t.GetServiceAccount() == "" {
		return nil, fmt.Errorf("%s: spec.template.serviceAccount is empty: set the service account whose identity the VMs get", ref)
	}
	if err := spiffeid.ValidatePathSegment(t.GetServiceAccount()); err != nil {
		return nil, fmt.Errorf("%s: spec.template.serviceAccount %q is not usable in a SPIFFE ID: %v", ref, t.GetServiceAccount(), err)
	}
	if t.GetAddress() != "" {
		return nil, fmt.Errorf("%s: spec.template.address must not be set: each VM registers its own address", ref)
	}
	for _, n := range slices.Sorted(maps.Keys(t.GetPorts())) {
		if p := t.GetPorts()[n]; p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: spec.template.ports[%q]: port %d is out of range: use 1-65535", ref, n, p)
		}
	}
	if t.GetLocality() != "" {
		if _, err := registry.ParseLocality(t.GetLocality()); err != nil {
			return nil, fmt.Errorf("%s: spec.template.locality: %w", ref, err)
		}
	}
	if p := wg.GetProbe(); p != nil {
		switch {
		case p.GetHttpGet() != nil:
			if port := p.GetHttpGet().GetPort(); port < 1 || port > 65535 {
				return nil, fmt.Errorf("%s: spec.probe.httpGet.port %d is out of range: use 1-65535", ref, port)
			}
		case p.GetTcpSocket() != nil:
			if port := p.GetTcpSocket().GetPort(); port < 1 || port > 65535 {
				return nil, fmt.Errorf("%s: spec.probe.tcpSocket.port %d is out of range: use 1-65535", ref, port)
			}
		case p.GetExec() != nil:
			if len(p.GetExec().GetCommand()) == 0 {
				return nil, fmt.Errorf("%s: spec.probe.exec.command is empty: give the command to run", ref)
			}
		case p.GetGrpc() != nil:
			return nil, fmt.Errorf("%s: spec.probe.grpc is not supported: use httpGet, tcpSocket or exec", ref)
		default:
			return nil, fmt.Errorf("%s: spec.probe has no check: set httpGet, tcpSocket or exec", ref)
		}
	}
	return wg, nil
}

func (w *Server) loadGroup(namespace, name string) (*workloadGroup, error) {
	data, err := w.cfg.Store.Get(store.BucketMeta, metaGroupPrefix+namespace+"/"+name)
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, nil
	}
	g := new(workloadGroup)
	if err := json.Unmarshal(data, g); err != nil {
		return nil, fmt.Errorf("stored WorkloadGroup %s/%s: %w", namespace, name, err)
	}
	if g.spec, err = ParseWorkloadGroupSpec(namespace, name, g.Spec); err != nil {
		return nil, err
	}
	return g, nil
}

// dnsLabel reports whether s is an RFC 1123 label.
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
