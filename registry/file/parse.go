package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingpb "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

const (
	kindServiceEntry  = "ServiceEntry"
	kindWorkloadEntry = "WorkloadEntry"
	// kindDestinationRule documents share the directory; the control
	// plane reads them as locality policies.
	kindDestinationRule = "DestinationRule"
)

// apiVersions are the Istio networking versions accepted; the spec is the
// same in all of them.
var apiVersions = []string{
	"networking.istio.io/v1",
	"networking.istio.io/v1beta1",
	"networking.istio.io/v1alpha3",
}

// A Document is one ServiceEntry or WorkloadEntry read from a file and
// checked on its own. Checks that need every file, such as duplicate hosts
// and workload selection, are left to Load.
type Document struct {
	File string // the name given to Parse
	// Index counts the file's non-empty documents from 1.
	Index int
	// Line is the line on which the document starts.
	Line int

	// ObjectMeta is the document's metadata; Namespace is DefaultNamespace
	// when the document names none.
	ObjectMeta
	// Export reports "export: true"; only a ServiceEntry may set it.
	Export bool

	// Exactly one of these is set.
	ServiceEntry  *networkingpb.ServiceEntry
	WorkloadEntry *networkingpb.WorkloadEntry
}

// kind is the document's Kubernetes kind.
func (d *Document) kind() string {
	if d.ServiceEntry != nil {
		return kindServiceEntry
	}
	return kindWorkloadEntry
}

// ref names the object as "Kind namespace/name".
func (d *Document) ref() string {
	return d.kind() + " " + d.Namespace + "/" + d.Name
}

// Parse reads one file's documents. name is used in errors only. A file with
// no documents yields none and no error. Errors are *FileError.
func Parse(name string, data []byte) ([]*Document, error) {
	var docs []*Document
	for _, c := range splitDocuments(data) {
		d, err := parseDocument(c.text, c.line)
		if err != nil {
			return nil, &FileError{File: name, Document: c.index, Line: c.line, Err: err}
		}
		if d == nil {
			continue
		}
		d.File, d.Index, d.Line = name, c.index, c.line
		docs = append(docs, d)
	}
	return docs, nil
}

// chunk is the text of one document.
type chunk struct {
	index int
	line  int // line of the first content line, from 1
	text  []byte
}

var utf8BOM = []byte("\xef\xbb\xbf")

// splitDocuments cuts a stream at "---" and "..." lines and drops the
// documents that hold only blank lines and comments. Leading blank and
// comment lines are dropped too, so that a chunk's first line is c.line.
func splitDocuments(data []byte) []chunk {
	data = bytes.TrimPrefix(data, utf8BOM)
	var (
		out  []chunk
		cur  []byte
		line int // first line of cur; 0 while cur is empty
	)
	flush := func() {
		if line > 0 {
			out = append(out, chunk{index: len(out) + 1, line: line, text: cur})
		}
		cur, line = nil, 0
	}
	for n := 1; len(data) > 0; n++ {
		var l []byte
		l, data, _ = bytes.Cut(data, []byte("\n"))
		switch {
		case isMarker(l, "---"):
			flush()
			l = l[3:] // "--- {a: 1}" starts a document on the marker line
		case isMarker(l, "..."):
			flush()
			continue
		}
		if line == 0 {
			if !hasContent(l) {
				continue
			}
			line = n
		}
		cur = append(cur, l...)
		cur = append(cur, '\n')
	}
	flush()
	return out
}

// isMarker reports whether l is the document marker m, alone or followed by
// white space.
func isMarker(l []byte, m string) bool {
	if !bytes.HasPrefix(l, []byte(m)) {
		return false
	}
	return len(l) == len(m) || strings.IndexByte(" \t\r", l[len(m)]) >= 0
}

// hasContent reports whether l is more than white space and a comment.
func hasContent(l []byte) bool {
	l = bytes.TrimLeft(l, " \t\r")
	return len(l) > 0 && l[0] != '#'
}

// Allowed keys of a document and of its metadata.
var (
	documentKeys = []string{"apiVersion", "kind", "metadata", "export", "spec"}
	metadataKeys = []string{"name", "namespace", "labels", "annotations"}
)

// parseDocument parses and checks one document that starts on line first of
// its file. It returns nil for a document that is YAML null.
func parseDocument(text []byte, first int) (*Document, error) {
	js, err := yaml.YAMLToJSONStrict(text)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %s", fileLines(err.Error(), first))
	}
	if string(js) == "null" {
		return nil, nil
	}
	obj, export, err := decodeStrict(js)
	if obj == nil || err != nil {
		return nil, err
	}
	d := &Document{ObjectMeta: obj.Metadata, Export: export}
	ref := obj.Ref()
	if !obj.HasSpec() {
		return nil, fmt.Errorf("%s: spec is missing", ref)
	}
	var msg proto.Message
	if obj.Kind == kindServiceEntry {
		d.ServiceEntry = &networkingpb.ServiceEntry{}
		msg = d.ServiceEntry
	} else {
		d.WorkloadEntry = &networkingpb.WorkloadEntry{}
		msg = d.WorkloadEntry
	}
	if err := protojson.Unmarshal(obj.Spec, msg); err != nil {
		m := protoMessage(err)
		if strings.Contains(m, "unknown field") {
			return nil, fmt.Errorf("%s: spec: %s: check the name against Istio's %s reference", ref, m, obj.Kind)
		}
		return nil, fmt.Errorf("%s: spec: %s", ref, m)
	}
	if d.ServiceEntry != nil {
		err = checkServiceEntry(d.ServiceEntry)
	} else {
		err = checkWorkload(d.WorkloadEntry)
		if err != nil {
			err = fmt.Errorf("spec.%w", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return d, nil
}

// decodeStrict decodes the envelope of a config directory's document (JSON)
// and the "export" field beside it, field by field so that each error names
// its field: no key outside the envelope, each value of its type, a kind
// and apiVersion this package reads, a valid name and namespace. It returns
// a nil object for a kind left to others (DestinationRule).
func decodeStrict(js []byte) (obj *Object, export bool, err error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, false, errors.New("not an object: a document is a mapping with apiVersion, kind, metadata and spec")
	}
	if err := onlyKeys(top, documentKeys, "", "a document"); err != nil {
		return nil, false, err
	}
	obj = new(Object)
	if err := decodeField(top, "kind", &obj.Kind); err != nil {
		return nil, false, err
	}
	kind := obj.Kind
	if kind == kindDestinationRule {
		return nil, false, nil
	}
	if kind != kindServiceEntry && kind != kindWorkloadEntry {
		if kind == "" {
			return nil, false, errors.New("kind is missing: set kind to ServiceEntry or WorkloadEntry")
		}
		return nil, false, fmt.Errorf("unknown kind %q: use ServiceEntry or WorkloadEntry", kind)
	}
	if err := decodeField(top, "apiVersion", &obj.APIVersion); err != nil {
		return nil, false, err
	}
	if !slices.Contains(apiVersions, obj.APIVersion) {
		if obj.APIVersion == "" {
			return nil, false, fmt.Errorf("%s: apiVersion is missing: use %s", kind, apiVersions[0])
		}
		return nil, false, fmt.Errorf("%s: apiVersion %q is not supported: use one of %s", kind, obj.APIVersion, strings.Join(apiVersions, ", "))
	}
	if obj.Metadata, err = parseMetadata(top["metadata"], kind); err != nil {
		return nil, false, err
	}
	if err := decodeField(top, "export", &export); err != nil {
		return nil, false, fmt.Errorf("%s: export must be true or false", obj.Ref())
	}
	if _, ok := top["export"]; ok && kind != kindServiceEntry {
		return nil, false, fmt.Errorf("%s: export applies to a ServiceEntry only: remove it", obj.Ref())
	}
	obj.Spec = top["spec"]
	return obj, export, nil
}

// parseMetadata reads the metadata of a document of the given kind.
func parseMetadata(raw json.RawMessage, kind string) (ObjectMeta, error) {
	var m ObjectMeta
	if raw == nil || string(raw) == "null" {
		return m, fmt.Errorf("%s: metadata is missing: set metadata.name", kind)
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(raw, &md); err != nil {
		return m, fmt.Errorf("%s: metadata must be a mapping with name, namespace and labels", kind)
	}
	if err := onlyKeys(md, metadataKeys, "metadata.", "metadata"); err != nil {
		return m, fmt.Errorf("%s: %w", kind, err)
	}
	if err := decodeField(md, "name", &m.Name); err != nil {
		return m, fmt.Errorf("%s: metadata.%w", kind, err)
	}
	if m.Name == "" {
		return m, fmt.Errorf("%s: metadata.name is missing: every object needs a name", kind)
	}
	if !isDNSSubdomain(m.Name) {
		return m, fmt.Errorf("%s: metadata.name %q is not a valid name: use lowercase letters, digits, '-' and '.'", kind, m.Name)
	}
	if err := decodeField(md, "namespace", &m.Namespace); err != nil {
		return m, fmt.Errorf("%s %s: metadata.%w", kind, m.Name, err)
	}
	if m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	if !isDNSLabel(m.Namespace) {
		return m, fmt.Errorf("%s %s: metadata.namespace %q is not a valid namespace: use up to 63 lowercase letters, digits and '-'", kind, m.Name, m.Namespace)
	}
	if err := decodeField(md, "labels", &m.Labels); err != nil {
		return m, fmt.Errorf("%s %s/%s: metadata.labels must map names to strings: quote numbers and booleans", kind, m.Namespace, m.Name)
	}
	if err := decodeField(md, "annotations", &m.Annotations); err != nil {
		return m, fmt.Errorf("%s %s/%s: metadata.annotations must map names to strings: quote numbers and booleans", kind, m.Namespace, m.Name)
	}
	return m, nil
}

// onlyKeys rejects a key of m outside allowed. prefix is the mapping's path
// and what names it in the message.
func onlyKeys(m map[string]json.RawMessage, allowed []string, prefix, what string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("unknown field %q: %s holds only %s", prefix+k, what, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// decodeField decodes m[key], when present and not null, into v.
func decodeField(m map[string]json.RawMessage, key string, v any) error {
	raw, ok := m[key]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s has the wrong type: %s", key, raw)
	}
	return nil
}

// checkServiceEntry checks the parts of a ServiceEntry spec that this
// package uses.
func checkServiceEntry(se *networkingpb.ServiceEntry) error {
	switch len(se.GetHosts()) {
	case 0:
		return errors.New("spec.hosts is empty: list the service's hostname")
	case 1:
	default:
		return fmt.Errorf("spec.hosts lists %d hosts (%s); exactly one is supported: write one ServiceEntry per host",
			len(se.GetHosts()), strings.Join(se.GetHosts(), ", "))
	}
	if err := checkHost(se.GetHosts()[0]); err != nil {
		return fmt.Errorf("spec.hosts[0]: %w", err)
	}
	if err := registry.CheckExportTo(se.GetExportTo()); err != nil {
		return fmt.Errorf("spec.exportTo: %w", err)
	}

	if len(se.GetPorts()) == 0 {
		return errors.New("spec.ports is empty: declare at least one port")
	}
	names := make(map[string]bool)
	numbers := make(map[uint32]string)
	for i, p := range se.GetPorts() {
		if !validPort(p.GetNumber()) {
			return fmt.Errorf("spec.ports[%d]: port number %d is out of range: use 1-65535", i, p.GetNumber())
		}
		if p.GetName() == "" {
			return fmt.Errorf("spec.ports[%d]: port %d has no name: give every port a unique name", i, p.GetNumber())
		}
		if names[p.GetName()] {
			return fmt.Errorf("spec.ports[%d]: duplicate port name %q: port names must be unique", i, p.GetName())
		}
		if other, ok := numbers[p.GetNumber()]; ok {
			return fmt.Errorf("spec.ports[%d]: duplicate port number %d (also port %q): port numbers must be unique", i, p.GetNumber(), other)
		}
		names[p.GetName()] = true
		numbers[p.GetNumber()] = p.GetName()
		if t := p.GetTargetPort(); t != 0 && !validPort(t) {
			return fmt.Errorf("spec.ports[%d]: targetPort %d is out of range: use 1-65535, or leave it out to use the port number", i, t)
		}
	}

	if sel := se.GetWorkloadSelector(); sel != nil && len(sel.GetLabels()) == 0 {
		return errors.New("spec.workloadSelector.labels is empty: list the labels of the WorkloadEntries to select, or remove workloadSelector")
	}
	for i, ep := range se.GetEndpoints() {
		if err := checkWorkload(ep); err != nil {
			return fmt.Errorf("spec.endpoints[%d].%w", i, err)
		}
	}
	return nil
}

// checkWorkload checks an inline endpoint or a WorkloadEntry spec. Its errors
// start with the field name so that callers can prefix the path.
func checkWorkload(we *networkingpb.WorkloadEntry) error {
	if _, err := parseAddress(we.GetAddress()); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(we.GetPorts())) {
		if p := we.GetPorts()[name]; !validPort(p) {
			return fmt.Errorf("ports[%q]: port %d is out of range: use 1-65535", name, p)
		}
	}
	if _, err := parseLocality(we.GetLocality()); err != nil {
		return fmt.Errorf("locality: %w", err)
	}
	if sa := we.GetServiceAccount(); sa != "" {
		if err := spiffeid.ValidatePathSegment(sa); err != nil {
			return fmt.Errorf("serviceAccount %q is not usable in a SPIFFE ID: %v", sa, err)
		}
	}
	return nil
}

// parseAddress parses an endpoint address, which must be an IP literal.
func parseAddress(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("address is missing: set the workload's IP address")
	}
	a, err := netip.ParseAddr(s)
	switch {
	case strings.HasPrefix(s, "unix://"):
		return netip.Addr{}, fmt.Errorf("address %q is a Unix domain socket; only IP addresses are supported", s)
	case err != nil:
		return netip.Addr{}, fmt.Errorf("address %q is not an IP address; DNS names are not supported yet: use the workload's IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address %q has an IPv6 zone: remove the %%%s suffix", s, a.Zone())
	}
	return a, nil
}

// parseLocality parses a locality; the empty string means the cluster's
// default and yields nil.
func parseLocality(s string) (*registrypb.Locality, error) {
	if s == "" {
		return nil, nil
	}
	return registry.ParseLocality(s)
}

func validPort(p uint32) bool { return p >= 1 && p <= 65535 }

// checkHost accepts a lowercase DNS name.
func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("host is empty: set the service's hostname")
	case strings.Contains(h, "*"):
		return fmt.Errorf("host %q is a wildcard; only a single service's hostname is supported", h)
	case !isDNSSubdomain(h):
		return fmt.Errorf("host %q is not a valid hostname: use lowercase letters, digits, '-' and '.', such as order.shop.svc.cluster.local", h)
	}
	return nil
}

// isDNSLabel reports whether s is an RFC 1123 label: up to 63 lowercase
// letters, digits and inner dashes.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isDNSSubdomain reports whether s is an RFC 1123 subdomain: dot-separated
// labels, at most 253 characters.
func isDNSSubdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// yamlLine matches the line numbers in the YAML parser's messages.
var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// fileLines turns the chunk line numbers in a YAML error message into file
// line numbers, for a chunk that starts on line first.
func fileLines(msg string, first int) string {
	return yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(strings.TrimPrefix(m, "line "))
		if err != nil {
			return m
		}
		return "line " + strconv.Itoa(n+first-1)
	})
}

// protoPrefix matches the "proto: (line 1:23): " that protojson puts before
// its messages; the line refers to the JSON form, which users never see.
var protoPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*(\(line \d+:\d+\):[\s\x{00a0}]*)?`)

func protoMessage(err error) string {
	return protoPrefix.ReplaceAllString(err.Error(), "")
}
