package file

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	networkingpb "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// A config directory names what its cluster imports with the objects that
// name imports in Kubernetes: an MCS ServiceImport (name reviews, namespace
// shop imports reviews.shop.svc.cluster.local), and an Istio Sidecar, whose
// egress hosts name any hostname ("*/api.example.com") and whose wildcards
// match the directory's ServiceEntries (istioimports.go). They sit in any
// YAML file of the directory, beside the ServiceEntries.

// ServiceImportDomain is the domain of the hostname a ServiceImport names,
// as a Kubernetes Service's: <name>.<namespace>.svc.cluster.local.
const ServiceImportDomain = "svc.cluster.local"

// Imports is what a config directory names to import.
type Imports struct {
	// Hosts are the hostnames, sorted.
	Hosts []string
	// Named reports whether some file holds a ServiceImport or a Sidecar:
	// without one the directory says nothing of imports.
	Named bool
}

// fileImports is what one file names: its ServiceImports' hostnames, its
// Sidecars, and its ServiceEntries' hosts, which Sidecars' wildcards match.
type fileImports struct {
	requests []string
	sidecars []Sidecar
	declared []Declared
}

func (f fileImports) named() bool { return len(f.requests) > 0 || len(f.sidecars) > 0 }

// parseImports reads what one file names to import; name is used in
// errors, which are *FileError naming the document and its line.
func parseImports(name string, data []byte) (fileImports, error) {
	var out fileImports
	objs, err := DecodeOnly(name, data, KindServiceImport, KindSidecar, KindServiceEntry)
	if err != nil {
		return out, err
	}
	for _, o := range objs {
		fail := func(err error) error { e := o.where(); e.Err = fmt.Errorf("%s: %w", o.Ref(), err); return e }
		switch o.Kind {
		case KindServiceImport:
			if len(validation.IsDNS1123Label(o.Metadata.Name)) > 0 {
				return out, fail(errors.New("metadata.name names a service: use its Kubernetes name (a DNS label, without dots)"))
			}
			out.requests = append(out.requests, o.Metadata.Name+"."+o.Metadata.Namespace+"."+ServiceImportDomain)
		case KindSidecar:
			spec, _ := o.SpecProto().(*networkingpb.Sidecar)
			sc := Sidecar{Namespace: o.Metadata.Namespace, Selects: spec.GetWorkloadSelector() != nil}
			for i, eg := range spec.GetEgress() {
				for j, h := range eg.GetHosts() {
					if err := CheckEgressHost(h); err != nil {
						return out, fail(fmt.Errorf("spec.egress[%d].hosts[%d]: %w", i, j, err))
					}
					sc.Hosts = append(sc.Hosts, h)
				}
			}
			out.sidecars = append(out.sidecars, sc)
		case KindServiceEntry:
			spec, _ := o.SpecProto().(*networkingpb.ServiceEntry)
			for _, h := range spec.GetHosts() {
				out.declared = append(out.declared, Declared{Namespace: o.Metadata.Namespace, Host: h, ExportTo: spec.GetExportTo()})
			}
		}
	}
	return out, nil
}

// ImportDir reads the imports of a config directory again and again, as
// the control plane polls it, and keeps each file's last good imports
// (lastGood), so that a file being written never drops an import. Each
// problem is logged once per file. An ImportDir is used by one goroutine.
type ImportDir struct{ files lastGood[fileImports] }

// NewImportDir returns an ImportDir for the directory path. It does no I/O.
func NewImportDir(path string, log *slog.Logger) *ImportDir {
	if log == nil {
		log = slog.Default()
	}
	return &ImportDir{files: lastGood[fileImports]{
		path:  path,
		parse: parseImports,
		names: fileImports.named,
		parsesAgain: func(path string, _ fileImports) {
			log.Info("imports: file parses again", "file", path)
		},
		failed: func(_ string, _ fileImports, err error) {
			log.Warn("imports: a file of the config directory does not parse; the imports it named before stay in force until it does or is removed", "error", err)
		},
	}}
}

// Read reads the directory and returns the imports in force. It fails only
// if the directory does not list; then nothing changes.
func (d *ImportDir) Read() (Imports, error) {
	if err := d.files.read(); err != nil {
		return Imports{}, err
	}
	return mergeImports(d.files.inForce()), nil
}

// Problems joins the problem of every file whose content last read is not
// in force, each a *FileError; nil when every file parsed.
func (d *ImportDir) Problems() error { return d.files.problems(true) }

// mergeImports merges the files' imports: the ServiceImports' hostnames
// and what each Sidecar names, its wildcards matched against every file's
// ServiceEntries.
func mergeImports(files []fileImports) Imports {
	var declared []Declared
	for _, f := range files {
		declared = append(declared, f.declared...)
	}
	out := Imports{Hosts: []string{}}
	for _, f := range files {
		out.Named = out.Named || f.named()
		out.Hosts = append(out.Hosts, f.requests...)
		for _, sc := range f.sidecars {
			out.Hosts = append(out.Hosts, EgressImports(sc.Namespace, sc.Hosts, declared)...)
		}
	}
	slices.Sort(out.Hosts)
	out.Hosts = slices.Compact(out.Hosts)
	return out
}
