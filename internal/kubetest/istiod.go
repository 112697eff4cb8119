package kubetest

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/federate/federate/internal/testport"
)

// IstiodBinaryEnv names Istio's pilot-discovery (istiod) binary; 'make
// pilot-discovery' builds it and the Makefile sets this for the tests.
const IstiodBinaryEnv = "FEDERATE_PILOT_DISCOVERY"

// IstioPin is the istio.io/istio version scripts/build-server.sh builds (the Makefile pins it).
const IstioPin = "v0.0.0-20260827124520-eed52ebb66ad"

// IstiodBinary returns the pilot-discovery to run: $FEDERATE_PILOT_DISCOVERY,
// or the cached build if that is unset. It fails the test, saying how to
// build it, when there is none.
func IstiodBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(IstiodBinaryEnv)
	if bin == "" {
		if cache, err := os.UserCacheDir(); err == nil {
			bin = filepath.Join(cmpOr(os.Getenv("FEDERATE_CACHE"), filepath.Join(cache, "federate")), "pilot-discovery-"+IstioPin)
		}
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("no pilot-discovery at %q ($%s): run 'make pilot-discovery' (15 to 40 minutes once), or 'make test', which builds it and sets $%s", bin, IstiodBinaryEnv, IstiodBinaryEnv)
	}
	return bin
}

// IstiodConfig configures an istiod for a cluster.
type IstiodConfig struct {
	// ClusterID is istiod's cluster name (--clusterID).
	ClusterID string
	// MeshConfig is the mesh configuration, YAML (--meshConfig).
	MeshConfig string
	// CACertsDir holds Istio plug-in CA files (ca-cert.pem, ca-key.pem,
	// root-cert.pem, cert-chain.pem) that istiod's CA signs with.
	CACertsDir string
}

// Istiod is a running pilot-discovery.
type Istiod struct {
	// XDSAddr serves plaintext ADS, without authentication (XDS_AUTH=false),
	// like istiod's 15010.
	XDSAddr string
	// LogPath is the process's log.
	LogPath string
}

// StartIstiod runs Istio's real pilot-discovery against the cluster's API,
// in namespace istio-system, waits until it is ready, and stops it when
// the test ends.
func (c *Cluster) StartIstiod(t testing.TB, cfg IstiodConfig) *Istiod {
	t.Helper()
	bin := IstiodBinary(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig, c.Config.BearerToken); err != nil {
		t.Fatal(err)
	}
	mesh, networks := filepath.Join(dir, "mesh.yaml"), filepath.Join(dir, "meshNetworks.yaml")
	for path, data := range map[string]string{mesh: cfg.MeshConfig, networks: "networks: {}\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.EnsureNamespace(t, "istio-system", nil)
	xdsAddr, httpAddr := testport.Addr(t), testport.Addr(t)
	cmd := exec.Command(bin, "discovery",
		"--kubeconfig", kubeconfig, "--clusterID", cfg.ClusterID, "--registries", "Kubernetes",
		"--meshConfig", mesh, "--networksConfig", networks,
		"--grpcAddr", xdsAddr, "--httpAddr", httpAddr, "--httpsAddr", "", "--secureGRPCAddr", "",
		"--monitoringAddr", testport.Addr(t), "--ctrlz_port", portOf(testport.Addr(t)),
		"--namespace", "istio-system", "--domain", "cluster.local")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"POD_NAMESPACE=istio-system", "POD_NAME=istiod-"+c.Name, "REVISION=default",
		"XDS_AUTH=false", "PILOT_ENABLE_XDS_IDENTITY_CHECK=false",
		"INJECTION_WEBHOOK_CONFIG_NAME=", "VALIDATION_WEBHOOK_CONFIG_NAME=",
		"ROOT_CA_DIR="+cfg.CACertsDir, "PILOT_ENABLE_ANALYSIS=false", "CLUSTER_ID="+cfg.ClusterID,
	)
	logPath := filepath.Join(dir, "pilot-discovery.log")
	p, err := startProcess(cmd, logPath)
	if err != nil {
		t.Fatalf("start pilot-discovery: %v", err)
	}
	t.Cleanup(p.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ready", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &Istiod{XDSAddr: xdsAddr, LogPath: logPath}
			}
		}
		if exited, status := p.exited(); exited {
			t.Fatalf("pilot-discovery exited before it was ready (%s); its log ends:\n%s", status, tail(logPath))
		}
		if ctx.Err() != nil {
			t.Fatalf("pilot-discovery not ready within 2 minutes; its log ends:\n%s", tail(logPath))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
