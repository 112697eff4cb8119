package file

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networkingpb "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// A Document is one ServiceEntry, WorkloadEntry or ServiceExport read from
// a file and checked on its own. Checks that need every file, such as
// duplicate hosts, exports and workload selection, are left to Load.
type Document struct {
	File string // the name given to Parse
	// Index counts the file's non-empty documents from 1.
	Index int
	// Item counts the items of a List document from 1; 0 outside a list.
	Item int
	// Line is the line on which the document starts.
	Line int

	// ObjectMeta is the object's metadata; Namespace is DefaultNamespace
	// when the object names none.
	metav1.ObjectMeta

	// Exactly one of these is set.
	ServiceEntry  *networkingpb.ServiceEntry
	WorkloadEntry *networkingpb.WorkloadEntry
	// ServiceExport is in its v1beta1 form whichever version was read.
	ServiceExport *mcsv1beta1.ServiceExport
}

// kind is the document's Kubernetes kind.
func (d *Document) kind() string {
	switch {
	case d.ServiceEntry != nil:
		return KindServiceEntry
	case d.ServiceExport != nil:
		return KindServiceExport
	}
	return KindWorkloadEntry
}

// ref names the object as "Kind namespace/name".
func (d *Document) ref() string {
	return d.kind() + " " + d.Namespace + "/" + d.Name
}

// where locates the document, for errors.
func (d *Document) where(err error) *FileError {
	return &FileError{File: d.File, Document: d.Index, Item: d.Item, Line: d.Line, Err: err}
}

// Parse reads one file's objects with Decode and checks the ServiceEntries,
// WorkloadEntries and ServiceExports. Other kinds that Decode knows
// (DestinationRules, Sidecars...) are left to their readers; a kind it does
// not know is refused. name is used in errors only. A file with no
// documents yields none and no error. Errors are *FileError.
func Parse(name string, data []byte) ([]*Document, error) {
	objs, err := Decode(name, data)
	if err != nil {
		return nil, err
	}
	var docs []*Document
	for _, o := range objs {
		d, err := parseObject(o)
		if err != nil {
			e := o.where()
			e.Err = err
			return nil, e
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs, nil
}

// parseObject checks one decoded object; it returns nil for a kind left to
// other readers.
func parseObject(o *Object) (*Document, error) {
	if o.Typed == nil {
		return nil, fmt.Errorf("unknown kind %q (apiVersion %q): a config directory holds Istio objects (ServiceEntry, WorkloadEntry, DestinationRule...) and ServiceExports; remove it or move it elsewhere", o.Kind, o.APIVersion)
	}
	d := &Document{File: o.File, Index: o.Document, Item: o.Item, Line: o.Line, ObjectMeta: o.Metadata}
	switch o.Kind {
	case KindServiceExport:
		switch sx := o.Typed.(type) {
		case *mcsv1beta1.ServiceExport:
			d.ServiceExport = sx
		case *mcsv1alpha1.ServiceExport:
			d.ServiceExport = &mcsv1beta1.ServiceExport{TypeMeta: sx.TypeMeta, ObjectMeta: sx.ObjectMeta}
		}
		return d, nil
	case KindServiceEntry:
		if !o.HasSpec() {
			return nil, fmt.Errorf("%s: spec is missing", o.Ref())
		}
		d.ServiceEntry = o.SpecProto().(*networkingpb.ServiceEntry)
		if err := checkServiceEntry(d.ServiceEntry); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Ref(), err)
		}
		return d, nil
	case KindWorkloadEntry:
		if !o.HasSpec() {
			return nil, fmt.Errorf("%s: spec is missing", o.Ref())
		}
		d.WorkloadEntry = o.SpecProto().(*networkingpb.WorkloadEntry)
		if err := checkWorkload(d.WorkloadEntry); err != nil {
			return nil, fmt.Errorf("%s: spec.%w", o.Ref(), err)
		}
		return d, nil
	}
	return nil, nil
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

	if len(se.GetEndpoints()) > 0 && se.GetResolution() == networkingpb.ServiceEntry_NONE {
		return errors.New("spec.endpoints are listed with resolution NONE (the default), which Istio refuses: set spec.resolution: STATIC")
	}
	if se.GetWorkloadSelector() != nil && len(se.GetEndpoints()) > 0 {
		return errors.New("spec.endpoints and spec.workloadSelector are both set: Istio accepts one of them: list the endpoints, or write them as WorkloadEntries the selector picks")
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

// isDNSSubdomain reports whether s is an RFC 1123 subdomain, as
// apimachinery's validation says.
func isDNSSubdomain(s string) bool {
	return len(validation.IsDNS1123Subdomain(s)) == 0
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
