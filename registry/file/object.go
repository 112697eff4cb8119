package file

import (
	"encoding/json"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"
)

// DefaultNamespace is the namespace of an object that names none.
const DefaultNamespace = "default"

// Object is the envelope every Kubernetes object in a file shares, and the
// one type federate decodes it into: the Istio objects of a config
// directory, DestinationRules, AuthorizationPolicies and WorkloadGroups.
// The spec is left raw for the kind's own decoder. It says what
// apimachinery's TypeMeta and ObjectMeta say, without linking apimachinery
// into the VM agent and the gateway.
type Object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec,omitempty"`
}

// ObjectMeta is the part of an object's metadata that federate reads.
type ObjectMeta struct {
	Name string `json:"name"`
	// Namespace is DefaultNamespace when the object names none.
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Ref names the object as "Kind namespace/name".
func (o *Object) Ref() string {
	return o.Kind + " " + o.Metadata.Namespace + "/" + o.Metadata.Name
}

// HasSpec reports whether the object has a spec that is not null.
func (o *Object) HasSpec() bool {
	return len(o.Spec) > 0 && string(o.Spec) != "null"
}

// DecodeObject reads one YAML (or JSON) document as an object. Fields
// outside the envelope are ignored, and so is their type: the caller checks
// the kind and decodes the spec. A document that is empty or YAML null
// yields nil and no error. Parse reads a config directory's files more
// strictly.
func DecodeObject(doc []byte) (*Object, error) {
	js, err := yaml.YAMLToJSON(doc)
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
