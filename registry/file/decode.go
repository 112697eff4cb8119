package file

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// DefaultNamespace is the namespace of an object that names none.
const DefaultNamespace = "default"

// Object is one Kubernetes object read from a file: its position, its
// envelope, its raw spec and, when its kind is one federate knows, the
// object decoded into its client-go type (Typed).
type Object struct {
	// File is the name given to Decode.
	File string `json:"-"`
	// Document counts the file's non-empty documents from 1.
	Document int `json:"-"`
	// Item counts the items of a List document from 1; 0 outside a list.
	Item int `json:"-"`
	// Line is the line on which the document starts.
	Line int `json:"-"`

	metav1.TypeMeta `json:",inline"`
	// Metadata's Namespace is DefaultNamespace when the object names none.
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     json.RawMessage   `json:"spec,omitempty"`

	// Typed is the object as its istio.io/client-go or mcs-api type, such
	// as *networkingv1.ServiceEntry or *mcsv1alpha1.ServiceExport; nil for a
	// kind that KnownKind does not know.
	Typed runtime.Object `json:"-"`
}

// Ref names the object as "Kind namespace/name".
func (o *Object) Ref() string {
	return o.Kind + " " + o.Metadata.Namespace + "/" + o.Metadata.Name
}

// HasSpec reports whether the object has a spec that is not null.
func (o *Object) HasSpec() bool {
	return len(o.Spec) > 0 && string(o.Spec) != "null"
}

// SpecProto is the typed object's Istio spec, such as a
// *networkingpb.ServiceEntry, or nil when the object has no typed proto spec.
func (o *Object) SpecProto() proto.Message {
	if o.Typed == nil {
		return nil
	}
	f := reflect.ValueOf(o.Typed).Elem().FieldByName("Spec")
	if !f.IsValid() {
		return nil
	}
	m, _ := f.Addr().Interface().(proto.Message)
	return m
}

// where locates the object for errors.
func (o *Object) where() *FileError {
	return &FileError{File: o.File, Document: o.Document, Item: o.Item, Line: o.Line}
}

// Decode reads every object of a file of YAML (or JSON) documents with
// apimachinery's YAML reader: documents separated by "---", comments,
// `kubectl get -o yaml` output (status, creationTimestamp, managedFields)
// and List documents, whose items come out one by one. Each object of a
// known kind is decoded strictly into its typed form: a field its type does
// not have is an error. Objects of other kinds come out with a nil Typed,
// for the caller to skip or refuse. name is used in errors only; they are
// *FileError naming the document (and list item) and its line.
func Decode(name string, data []byte) ([]*Object, error) {
	return decode(name, data, nil)
}

// DecodeOnly is Decode that types only the given kinds: the others come
// out untyped, as unknown kinds do, for a reader that skips them without
// the cost of checking them.
func DecodeOnly(name string, data []byte, kinds ...string) ([]*Object, error) {
	return decode(name, data, kinds)
}

// decode is Decode typing the kinds listed, or every known kind if none.
func decode(name string, data []byte, only []string) ([]*Object, error) {
	// The reader ends every line with "\n"; with the same line ends here,
	// each document it returns is found in data, and so is its line.
	data = bytes.ReplaceAll(bytes.TrimPrefix(data, utf8BOM), []byte("\r\n"), []byte("\n"))
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var (
		out    []*Object
		offset int // where the next document is searched for in data
		index  int
	)
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, &FileError{File: name, Line: badSeparatorLine(data, offset), Err: fmt.Errorf("invalid YAML: %v: a \"---\" line may carry only a comment", err)}
		}
		start := offset
		if i := bytes.Index(data[offset:], bytes.TrimSuffix(doc, []byte("\n"))); i >= 0 {
			start = offset + i
			offset = min(start+len(doc), len(data))
		}
		first, skip := firstContentLine(doc)
		if skip {
			continue
		}
		index++
		at := &FileError{File: name, Document: index, Line: lineAt(data, start) + first - 1}
		objs, err := decodeDocument(doc, lineAt(data, start), at, only)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
}

var utf8BOM = []byte("\xef\xbb\xbf")

// badSeparatorLine is the line of the first "---" line after off that
// carries more than a comment: the one error the reader itself reports.
func badSeparatorLine(data []byte, off int) int {
	line := lineAt(data, off)
	for l := range bytes.Lines(data[off:]) {
		if rest, ok := bytes.CutPrefix(l, []byte("---")); ok {
			if t := bytes.TrimSpace(rest); len(t) > 0 && t[0] != '#' {
				return line
			}
		}
		line++
	}
	return lineAt(data, off)
}

// lineAt is the line, from 1, of byte offset off of data.
func lineAt(data []byte, off int) int {
	return bytes.Count(data[:min(off, len(data))], []byte("\n")) + 1
}

// firstContentLine is the line, from 1, of doc's first line that is more
// than white space, a comment and the "---" the reader may leave at its
// start; skip reports a document without one.
func firstContentLine(doc []byte) (line int, skip bool) {
	for n, l := range bytes.Split(doc, []byte("\n")) {
		if n == 0 && bytes.HasPrefix(l, []byte("---")) {
			continue
		}
		if t := bytes.TrimLeft(l, " \t\r"); len(t) > 0 && t[0] != '#' {
			return n + 1, false
		}
	}
	return 0, true
}

// decodeDocument decodes one document, which starts on line start of its
// file; at locates it for errors.
func decodeDocument(doc []byte, start int, at *FileError, only []string) ([]*Object, error) {
	fail := func(err error) error { e := *at; e.Err = err; return &e }
	js, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fail(fmt.Errorf("invalid YAML: %s", fileLines(err.Error(), start)))
	}
	if string(js) == "null" {
		return nil, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, fail(errors.New("not a Kubernetes object: a document is a mapping with apiVersion, kind, metadata and spec"))
	}
	var kind string
	_ = json.Unmarshal(top["kind"], &kind)
	if items, ok := top["items"]; ok && strings.HasSuffix(kind, "List") {
		var list []json.RawMessage
		if err := json.Unmarshal(items, &list); err != nil {
			return nil, fail(fmt.Errorf("%s: items must be a list of objects", kind))
		}
		var out []*Object
		for i, item := range list {
			a := *at
			a.Item = i + 1
			o, err := decodeObject(item, &a, only)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
		return out, nil
	}
	o, err := decodeObject(js, at, only)
	if err != nil {
		return nil, err
	}
	return []*Object{o}, nil
}

// decodeObject decodes one object (JSON) located by at.
func decodeObject(js []byte, at *FileError, only []string) (*Object, error) {
	o := &Object{File: at.File, Document: at.Document, Item: at.Item, Line: at.Line}
	fail := func(err error) error { e := o.where(); e.Err = err; return e }
	if err := json.Unmarshal(js, o); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
			return nil, fail(fmt.Errorf("%s has the wrong type (%s, want %s): quote numbers and booleans meant as strings", te.Field, te.Value, te.Type))
		}
		return nil, fail(fmt.Errorf("not a Kubernetes object (%v): want a mapping with apiVersion, kind, metadata and spec", err))
	}
	if o.Kind == "" {
		return nil, fail(errors.New("kind is missing: set kind, such as ServiceEntry"))
	}
	if o.Metadata.Namespace == "" {
		o.Metadata.Namespace = DefaultNamespace
	}
	if err := checkTopLevel(o, js); err != nil {
		return nil, fail(err)
	}
	newTyped, known := knownKinds[o.Kind]
	if !known || only != nil && !slices.Contains(only, o.Kind) {
		return o, nil
	}
	newObj, ok := newTyped[o.APIVersion]
	if !ok {
		if o.APIVersion == "" {
			return nil, fail(fmt.Errorf("%s: apiVersion is missing: use %s", o.Kind, versionsOf(o.Kind)[0]))
		}
		return nil, fail(fmt.Errorf("%s: apiVersion %q is not supported: use one of %s", o.Kind, o.APIVersion, strings.Join(versionsOf(o.Kind), ", ")))
	}
	if err := checkName(o); err != nil {
		return nil, fail(err)
	}
	o.Typed = newObj()
	strict, err := kjson.UnmarshalStrict(js, o.Typed)
	if err == nil && len(strict) > 0 {
		err = strict[0]
	}
	if err != nil {
		return nil, fail(fmt.Errorf("%s: %s", o.Ref(), decodeMessage(err)))
	}
	setNamespace(o.Typed, o.Metadata.Namespace)
	if spec := o.SpecProto(); spec != nil && o.HasSpec() {
		// The specs' own JSON decoders skip unknown fields; Istio's API
		// server does not, so neither does federate. Other protojson
		// complaints (durations such as "1m") are Istio's to judge, and
		// its decoder took the spec.
		err := protojson.Unmarshal(o.Spec, spec.ProtoReflect().New().Interface())
		if m := ""; err != nil {
			if m = decodeMessage(err); strings.Contains(m, "unknown field") {
				return nil, fail(fmt.Errorf("%s: spec: %s: check the name against Istio's %s reference", o.Ref(), m, o.Kind))
			}
		}
	}
	return o, nil
}

// checkTopLevel refuses the "export" field that federate once read beside
// a ServiceEntry's spec, saying what replaces it.
func checkTopLevel(o *Object, js []byte) error {
	if !bytes.Contains(js, []byte(`"export"`)) {
		return nil // the common case, without decoding the object again
	}
	var top map[string]json.RawMessage
	_ = json.Unmarshal(js, &top)
	if _, ok := top["export"]; !ok {
		return nil
	}
	return fmt.Errorf("%s: the top-level field \"export\" is not part of Istio's API (the API server prunes it, kubectl --validate=strict and istioctl reject it): "+
		"remove it and export the service with a ServiceExport of the same name and namespace:\n%s", o.Ref(), ServiceExportYAML(o.Metadata.Namespace, o.Metadata.Name))
}

// ServiceExportYAML is the ServiceExport document that exports the
// ServiceEntry (or Service) namespace/name.
func ServiceExportYAML(namespace, name string) string {
	return fmt.Sprintf("---\napiVersion: %s\nkind: ServiceExport\nmetadata:\n  name: %s\n  namespace: %s\n", serviceExportVersion, name, namespace)
}

// checkName checks the object's name and namespace with apimachinery's
// validation, as the API server would.
func checkName(o *Object) error {
	m := o.Metadata
	if m.Name == "" {
		return fmt.Errorf("%s: metadata.name is missing: every object needs a name", o.Kind)
	}
	if errs := validation.IsDNS1123Subdomain(m.Name); len(errs) > 0 {
		return fmt.Errorf("%s: metadata.name %q is not a valid name: use lowercase letters, digits, '-' and '.'", o.Kind, m.Name)
	}
	if errs := validation.IsDNS1123Label(m.Namespace); len(errs) > 0 {
		return fmt.Errorf("%s %s: metadata.namespace %q is not a valid namespace: use up to 63 lowercase letters, digits and '-'", o.Kind, m.Name, m.Namespace)
	}
	return nil
}

// setNamespace gives a typed object the defaulted namespace.
func setNamespace(obj runtime.Object, ns string) {
	if m, ok := obj.(metav1.Object); ok && m.GetNamespace() == "" {
		m.SetNamespace(ns)
	}
}

// decodeMessage strips the decoders' prefixes and their positions in the
// JSON form, which users never see.
func decodeMessage(err error) string {
	m := protoPrefix.ReplaceAllString(err.Error(), "")
	m = strings.TrimPrefix(m, "json: ")
	return strings.Join(strings.Fields(m), " ")
}

// DecodeObject reads one YAML (or JSON) document as an object, leniently:
// fields outside the envelope are ignored, and so is their type, and the
// object is not typed: the caller checks the kind and decodes the spec. A
// document that is empty or YAML null yields nil and no error. Decode reads
// files strictly.
func DecodeObject(doc []byte) (*Object, error) {
	js, err := sigsyaml.YAMLToJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %v", err)
	}
	if string(js) == "null" {
		return nil, nil
	}
	o := new(Object)
	if err := json.Unmarshal(js, o); err != nil {
		return nil, errors.New("not a Kubernetes object: want a mapping with apiVersion, kind, metadata and spec")
	}
	if o.Metadata.Namespace == "" {
		o.Metadata.Namespace = DefaultNamespace
	}
	return o, nil
}
