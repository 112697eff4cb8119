package agent

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"istio.io/api/label"
	meshpb "istio.io/api/mesh/v1alpha1"
	networkingpb "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/trust"
)

// The bootstrap files WriteBootstrap writes ('federate vm configure') and
// LoadBootstrap reads, as Istio names them.
const (
	ClusterEnvFile = "cluster.env"
	MeshFile       = "mesh.yaml"
	RootCertFile   = "root-cert.pem"
	TokenFile      = "istio-token"
	HostsFile      = "hosts"
	// SidecarFile and AuthorizationFile are the operator's own, optional.
	SidecarFile       = "sidecar.yaml"
	AuthorizationFile = "authorization.yaml"
	// SVIDFile, in the state directory, is the SVID the agent renews.
	SVIDFile = "svid.pem"
)

// cluster.env keys.
const (
	EnvControlPlane   = "CA_ADDR"
	EnvControlPlaneID = "FEDERATE_CONTROL_PLANE_ID"
	EnvCluster        = "ISTIO_META_CLUSTER_ID"
	EnvNetwork        = "ISTIO_META_NETWORK"
	EnvNamespace      = "ISTIO_NAMESPACE"
	EnvServiceAccount = "SERVICE_ACCOUNT"
	EnvTrustDomain    = "TRUST_DOMAIN"
	EnvGroup          = "ISTIO_META_AUTO_REGISTER_GROUP"
	EnvAddress        = "ISTIO_SVC_IP"
	EnvLabels         = "ISTIO_METAJSON_LABELS"
)

// Bootstrap is what the bootstrap directory says.
type Bootstrap struct {
	Dir string
	// ControlPlane is host:port; the host is the control plane's internal
	// name, which Hosts maps to the cluster's gateway.
	ControlPlane   string
	ControlPlaneID spiffeid.ID
	Cluster        string
	Network        string
	Namespace      string
	Group          string
	// ID is the SVID the group's service account gets.
	ID spiffeid.ID
	// Address is the VM's IP address, if cluster.env sets it.
	Address string
	// Roots verify the control plane (the mesh CA) and seed the cluster's bundle.
	Roots []*x509.Certificate
	// Labels are the workload's labels (the group's template and metadata
	// labels), for the entry and for AuthorizationPolicy selectors.
	Labels map[string]string
	// Hosts maps names to addresses, like /etc/hosts.
	Hosts map[string]string
	Probe *networkingpb.ReadinessProbe
	Env   map[string]string
}

// FileError names the bootstrap file that is missing or wrong.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// LoadBootstrap reads the bootstrap directory. The token is read only when
// it is needed (ReadToken); the other files must all be there.
func LoadBootstrap(dir string) (*Bootstrap, error) {
	b := &Bootstrap{Dir: dir}
	path := func(name string) string { return filepath.Join(dir, name) }
	fileErr := func(name string, format string, args ...any) error {
		return &FileError{Path: path(name), Err: fmt.Errorf(format, args...)}
	}
	read := func(name string) ([]byte, error) {
		data, err := os.ReadFile(path(name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fileErr(name, "missing: install the files 'federate vm configure' wrote into %s (docs/vms.md)", dir)
		}
		if err != nil {
			return nil, readError(path(name), err)
		}
		return data, nil
	}

	data, err := read(ClusterEnvFile)
	if err != nil {
		return nil, err
	}
	if err := b.parseClusterEnv(data); err != nil {
		return nil, err
	}

	if data, err = read(MeshFile); err != nil {
		return nil, err
	}
	if b.Probe, err = parseMesh(data); err != nil {
		return nil, &FileError{Path: path(MeshFile), Err: err}
	}

	if _, err := read(RootCertFile); err != nil {
		return nil, err
	}
	if b.Roots, err = trust.LoadCertificates(path(RootCertFile)); err != nil {
		return nil, fileErr(RootCertFile, "no PEM certificate: write it again with 'federate vm configure'")
	}

	if data, err = read(HostsFile); err != nil {
		return nil, err
	}
	if b.Hosts, err = ParseHosts(data); err != nil {
		return nil, &FileError{Path: path(HostsFile), Err: err}
	}
	return b, nil
}

// parseClusterEnv reads cluster.env: where the control plane is, and who
// this workload is.
func (b *Bootstrap) parseClusterEnv(data []byte) error {
	fileErr := func(format string, args ...any) error {
		return &FileError{Path: filepath.Join(b.Dir, ClusterEnvFile), Err: fmt.Errorf(format, args...)}
	}
	var err error
	if b.Env, err = ParseEnv(data); err != nil {
		return &FileError{Path: filepath.Join(b.Dir, ClusterEnvFile), Err: err}
	}
	need := func(key string) (string, error) {
		v := b.Env[key]
		if v == "" {
			return "", fileErr("%s is missing: write the file again with 'federate vm configure'", key)
		}
		return v, nil
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{EnvControlPlane, &b.ControlPlane}, {EnvCluster, &b.Cluster}, {EnvNamespace, &b.Namespace}, {EnvGroup, &b.Group}} {
		if *f.dst, err = need(f.key); err != nil {
			return err
		}
	}
	if _, _, err := net.SplitHostPort(b.ControlPlane); err != nil {
		return fileErr("%s=%q: want host:port", EnvControlPlane, b.ControlPlane)
	}
	cpID, err := need(EnvControlPlaneID)
	if err != nil {
		return err
	}
	if b.ControlPlaneID, err = spiffeid.FromString(cpID); err != nil {
		return fileErr("%s=%q: %v", EnvControlPlaneID, cpID, err)
	}
	td, err := need(EnvTrustDomain)
	if err != nil {
		return err
	}
	sa, err := need(EnvServiceAccount)
	if err != nil {
		return err
	}
	tdID, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fileErr("%s=%q: %v", EnvTrustDomain, td, err)
	}
	if b.ID, err = spiffeid.FromSegments(tdID, "ns", b.Namespace, "sa", sa); err != nil {
		return fileErr("%s or %s: %v", EnvNamespace, EnvServiceAccount, err)
	}
	b.Network = b.Env[EnvNetwork]
	b.Labels = make(map[string]string)
	if js := b.Env[EnvLabels]; js != "" {
		if err := json.Unmarshal([]byte(js), &b.Labels); err != nil {
			return fileErr("%s: %v", EnvLabels, err)
		}
	}
	if a := b.Env[EnvAddress]; a != "" {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return fileErr("%s=%q is not an IP address", EnvAddress, a)
		}
		b.Address = ip.String()
	}
	return nil
}

// ReadToken reads the one-time token.
func (b *Bootstrap) ReadToken() (string, error) {
	p := filepath.Join(b.Dir, TokenFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", &FileError{Path: p, Err: errors.New("missing, and there is no valid SVID to renew: run 'federate vm configure' for a new token")}
	}
	if err != nil {
		return "", readError(p, err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", &FileError{Path: p, Err: errors.New("empty: run 'federate vm configure' for a new token")}
	}
	return tok, nil
}

// BootstrapConfig is what the bootstrap files of a WorkloadGroup's VMs
// say: WriteBootstrap writes it, and LoadBootstrap and ReadToken read it
// back on the VM.
type BootstrapConfig struct {
	Mesh    string
	Cluster string
	// Network is the VMs' network.
	Network   string
	Namespace string
	// Group is the WorkloadGroup's name, which also names the workloads,
	// and their canonical service unless a label does (CanonicalService).
	Group          string
	ServiceAccount string
	TrustDomain    string
	// Labels are the group's metadata and template labels (GroupLabels).
	Labels map[string]string
	// Ports are the template's ports; their numbers are the VM's inbound
	// ports.
	Ports map[string]uint32
	// Address is the VM's IP address; empty lets the agent find it.
	Address string
	// Gateway is where VMs reach the cluster's east-west gateway: the
	// control plane's internal name maps to its address, at its port.
	Gateway        netip.AddrPort
	ControlPlaneID spiffeid.ID
	// Probe is the group's readiness probe, or nil.
	Probe *networkingpb.ReadinessProbe
	// Roots is PEM: the roots that verify the control plane.
	Roots []byte
	// Token is the one-time bootstrap token.
	Token string
}

// ControlPlaneHost is the name under which VMs dial the control plane of
// cluster; the hosts file maps it to the cluster's gateway.
func ControlPlaneHost(cluster string) string { return sni.Internal(sni.ControlPlane, cluster) }

// WriteBootstrap writes the bootstrap files of c into dir, creating it:
// cluster.env, mesh.yaml, root-cert.pem, the token (mode 0600, as it is a
// secret) and hosts, in the forms LoadBootstrap reads.
func WriteBootstrap(dir string, c BootstrapConfig) error {
	files, err := c.files()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("agent: bootstrap directory: %w", err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("agent: write bootstrap: %w", err)
		}
	}
	return nil
}

type bootstrapFile struct {
	name string
	data []byte
	mode os.FileMode
}

// files renders the bootstrap files.
func (c BootstrapConfig) files() ([]bootstrapFile, error) {
	cpHost := ControlPlaneHost(c.Cluster)
	// As istioctl does: the canonical service and revision come from the
	// labels, and the labels then carry them.
	service, revision := CanonicalService(c.Labels, c.Group)
	labels := maps.Clone(c.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[label.ServiceCanonicalName.Name] = service
	labels[label.ServiceCanonicalRevision.Name] = revision
	labelsJSON, err := json.Marshal(labels)
	if err != nil {
		return nil, err
	}
	var ports []string
	for _, p := range slices.Sorted(maps.Values(c.Ports)) {
		ports = append(ports, strconv.Itoa(int(p)))
	}
	// Istio's proxy metadata, which mesh.yaml repeats.
	meta := map[string]string{
		"CANONICAL_SERVICE":        service,
		"CANONICAL_REVISION":       revision,
		EnvGroup:                   c.Group,
		EnvCluster:                 c.Cluster,
		"ISTIO_META_MESH_ID":       c.Mesh,
		EnvNetwork:                 c.Network,
		"ISTIO_META_WORKLOAD_NAME": c.Group,
		EnvLabels:                  string(labelsJSON),
		"POD_NAMESPACE":            c.Namespace,
		EnvServiceAccount:          c.ServiceAccount,
		EnvTrustDomain:             c.TrustDomain,
	}
	env := maps.Clone(meta)
	maps.Copy(env, map[string]string{
		EnvControlPlane:       net.JoinHostPort(cpHost, strconv.Itoa(int(c.Gateway.Port()))),
		EnvControlPlaneID:     c.ControlPlaneID.String(),
		EnvNamespace:          c.Namespace,
		"ISTIO_SERVICE":       c.Group + "." + c.Namespace,
		"ISTIO_INBOUND_PORTS": strings.Join(ports, ","),
	})
	if c.Address != "" {
		env[EnvAddress] = c.Address
	}
	var envText strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&envText, "%s=%s\n", k, shellQuote(env[k]))
	}

	mesh := map[string]any{"discoveryAddress": env[EnvControlPlane], "proxyMetadata": meta}
	if c.Probe != nil {
		pj, err := protojson.Marshal(c.Probe)
		if err != nil {
			return nil, err
		}
		mesh["readinessProbe"] = json.RawMessage(pj)
	}
	meshJSON, err := json.Marshal(map[string]any{"defaultConfig": mesh})
	if err != nil {
		return nil, err
	}
	meshYAML, err := yaml.JSONToYAML(meshJSON)
	if err != nil {
		return nil, err
	}
	return []bootstrapFile{
		{ClusterEnvFile, []byte(envText.String()), 0o644},
		{MeshFile, meshYAML, 0o644},
		{RootCertFile, c.Roots, 0o644},
		{TokenFile, []byte(c.Token + "\n"), 0o600},
		{HostsFile, []byte(c.Gateway.Addr().String() + " " + cpHost + "\n"), 0o644},
	}, nil
}

// shellQuote quotes a value for a KEY='value' line, as ParseEnv reads it.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ParseEnv reads shell KEY='value' lines, as cluster.env holds them.
func ParseEnv(data []byte) (map[string]string, error) {
	env := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t'\"") {
			return nil, fmt.Errorf("line %d: want KEY='value'", n)
		}
		val, err := unquote(v)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
		env[k] = val
	}
	return env, sc.Err()
}

// unquote undoes the shell quoting cluster.env uses: single quotes,
// double quotes without escapes, backslashes and bare words.
func unquote(v string) (string, error) {
	var out strings.Builder
	for len(v) > 0 {
		switch v[0] {
		case '\'':
			end := strings.IndexByte(v[1:], '\'')
			if end < 0 {
				return "", errors.New("unterminated single quote")
			}
			out.WriteString(v[1 : 1+end])
			v = v[2+end:]
		case '"':
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				return "", errors.New("unterminated double quote")
			}
			out.WriteString(v[1 : 1+end])
			v = v[2+end:]
		case '\\':
			if len(v) < 2 {
				return "", errors.New("trailing backslash")
			}
			out.WriteByte(v[1])
			v = v[2:]
		case ' ', '\t':
			return "", errors.New("unquoted white space: quote the value")
		default:
			out.WriteByte(v[0])
			v = v[1:]
		}
	}
	return out.String(), nil
}

// ParseHosts reads /etc/hosts lines: an address, then names.
func ParseHosts(data []byte) (map[string]string, error) {
	hosts := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want an address and a name", n)
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %q is not an IP address", n, f[0])
		}
		for _, name := range f[1:] {
			hosts[strings.ToLower(name)] = ip.String()
		}
	}
	return hosts, sc.Err()
}

// parseMesh reads mesh.yaml's defaultConfig (an Istio ProxyConfig) and
// returns its readiness probe, if any.
func parseMesh(data []byte) (*networkingpb.ReadinessProbe, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %v", err)
	}
	var top struct {
		DefaultConfig json.RawMessage `json:"defaultConfig"`
	}
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, errors.New("want a mapping with defaultConfig, as 'federate vm configure' writes it")
	}
	if len(top.DefaultConfig) == 0 || string(top.DefaultConfig) == "null" {
		return nil, nil
	}
	pc := new(meshpb.ProxyConfig)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(top.DefaultConfig, pc); err != nil {
		return nil, fmt.Errorf("defaultConfig: %s", strings.TrimPrefix(err.Error(), "proto: "))
	}
	p := pc.GetReadinessProbe()
	if p == nil {
		return nil, nil
	}
	switch {
	case p.GetHttpGet() != nil, p.GetTcpSocket() != nil, p.GetExec() != nil:
	case p.GetGrpc() != nil:
		return nil, errors.New("defaultConfig.readinessProbe.grpc is not supported: use httpGet, tcpSocket or exec")
	default:
		return nil, errors.New("defaultConfig.readinessProbe has no check: set httpGet, tcpSocket or exec")
	}
	return p, nil
}
