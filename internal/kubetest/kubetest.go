// Package kubetest runs real Kubernetes API servers for tests: one etcd and
// one kube-apiserver per cluster, on loopback, without Docker or kubelets.
// Pods never run, so tests create EndpointSlices that point at processes
// they started themselves.
package kubetest

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/internal/testport"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// BinaryEnv names the kube-apiserver binary; 'make kube-apiserver' builds
// it and the Makefile sets this for the tests.
const BinaryEnv = "FEDERATE_KUBE_APISERVER"

// Version is the kube-apiserver version scripts/build-server.sh builds (the Makefile pins it).
const Version = "v1.37.2"

const (
	adminToken   = "federate-test-admin"
	readyTimeout = 90 * time.Second
	stopTimeout  = 15 * time.Second
)

// Cluster is one running kube-apiserver.
type Cluster struct {
	Name string
	// Config authenticates as an administrator (group system:masters).
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for Config.
	Kubeconfig string

	env  *Env
	addr string
	dir  string

	mu   sync.Mutex // guards proc
	proc *process
}

// Env is an etcd and the apiservers that share it.
type Env struct {
	t       testing.TB
	bin     string
	dir     string
	etcdURL string
	certPEM []byte
	keyPEM  []byte
	saKey   string
}

// Start runs etcd and one apiserver per name, waits until every one is
// ready, and stops them all when the test ends.
func Start(t testing.TB, names ...string) []*Cluster {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	certPEM, keyPEM, err := selfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{t: t, bin: bin, dir: dir, certPEM: certPEM, keyPEM: keyPEM, saKey: filepath.Join(dir, "sa.key")}
	if err := writeServiceAccountKey(env.saKey); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"serving.crt", certPEM}, {"serving.key", keyPEM},
		{"tokens.csv", []byte(adminToken + ",admin,admin,system:masters\n")},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env.startEtcd()

	clusters := make([]*Cluster, len(names))
	for i, name := range names {
		c := &Cluster{Name: name, env: env, addr: testport.Addr(t), dir: filepath.Join(dir, name)}
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.Config = c.ConfigWithToken(adminToken)
		if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
			t.Fatal(err)
		}
		c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
		if err := c.WriteKubeconfig(c.Kubeconfig, adminToken); err != nil {
			t.Fatal(err)
		}
		clusters[i] = c
		t.Cleanup(func() { c.Stop() })
	}
	// Start them together: each takes about 10 to 20 s, mostly waiting.
	for _, c := range clusters {
		c.launch()
	}
	for _, c := range clusters {
		c.waitReady()
	}
	return clusters
}

// Binary returns the kube-apiserver to run: $FEDERATE_KUBE_APISERVER, or
// the cached build if that is unset. It fails the test, saying how to build
// it, when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(BinaryEnv)
	if bin == "" {
		if cache, err := os.UserCacheDir(); err == nil {
			bin = filepath.Join(cmpOr(os.Getenv("FEDERATE_CACHE"), filepath.Join(cache, "federate")), "kube-apiserver-"+Version)
		}
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("no kube-apiserver at %q ($%s): run 'make kube-apiserver' (about 15 minutes once), or 'make test', which builds it and sets $%s", bin, BinaryEnv, BinaryEnv)
	}
	return bin
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (e *Env) startEtcd() {
	t := e.t
	t.Helper()
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd is not installed: apt-get install -y etcd-server (or run .ci/run, which installs it)")
	}
	client, peer := testport.Addr(t), testport.Addr(t)
	e.etcdURL = "http://" + client
	logPath := filepath.Join(e.dir, "etcd.log")
	cmd := exec.Command(etcd,
		"--name", "kubetest", "--data-dir", filepath.Join(e.dir, "etcd"),
		"--listen-client-urls", e.etcdURL, "--advertise-client-urls", e.etcdURL,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "kubetest=http://"+peer,
		"--unsafe-no-fsync", "--log-level", "warn")
	p, err := startProcess(cmd, logPath)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(p.stop)
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(e.etcdURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if exited, status := p.exited(); exited {
			t.Fatalf("etcd exited before it was healthy (%s); its log ends:\n%s", status, tail(logPath))
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not become healthy within 30s; its log ends:\n%s", tail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launch starts the apiserver process without waiting for it.
func (c *Cluster) launch() {
	e := c.env
	e.t.Helper()
	host, port, _ := net.SplitHostPort(c.addr)
	cmd := exec.Command(e.bin,
		"--etcd-servers", e.etcdURL, "--etcd-prefix", "/"+c.Name,
		"--bind-address", host, "--secure-port", port,
		// Without an advertise address the apiserver looks for the
		// default route's interface, and exits where there is none. The
		// API refuses loopback addresses in Endpoints, so nothing
		// publishes the kubernetes Service's endpoints: nothing here
		// reaches the apiserver through it.
		"--advertise-address", host, "--endpoint-reconciler-type", "none",
		"--tls-cert-file", filepath.Join(e.dir, "serving.crt"), "--tls-private-key-file", filepath.Join(e.dir, "serving.key"),
		"--cert-dir", filepath.Join(c.dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc."+c.Name,
		"--service-account-key-file", e.saKey, "--service-account-signing-key-file", e.saKey,
		"--token-auth-file", filepath.Join(e.dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--enable-priority-and-fairness=false",
		"--v", "1")
	p, err := startProcess(cmd, c.logPath())
	if err != nil {
		e.t.Fatalf("start kube-apiserver for %s: %v", c.Name, err)
	}
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
}

func (c *Cluster) logPath() string { return filepath.Join(c.dir, "kube-apiserver.log") }

func (c *Cluster) waitReady() {
	t := c.env.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	// The process's exit ends the wait at once, not at the timeout.
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return
		}
		if exited, status := p.exited(); exited {
			t.Fatalf("kube-apiserver %s exited before it was ready (%s); its log ends:\n%s", c.Name, status, tail(c.logPath()))
		}
		if ctx.Err() != nil {
			t.Fatalf("kube-apiserver %s not ready within %s (%v); its log ends:\n%s", c.Name, readyTimeout, err, tail(c.logPath()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Stop stops the apiserver; the cluster's objects stay in etcd.
func (c *Cluster) Stop() {
	c.mu.Lock()
	p := c.proc
	c.proc = nil
	c.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Restart starts a stopped apiserver again on the same address and waits
// until it is ready; clients see the same cluster come back.
func (c *Cluster) Restart() {
	c.env.t.Helper()
	c.launch()
	c.waitReady()
}

// Addr is the apiserver's host:port.
func (c *Cluster) Addr() string { return c.addr }

// ConfigWithToken returns a client config that authenticates with token.
func (c *Cluster) ConfigWithToken(token string) *rest.Config {
	return &rest.Config{
		Host:            "https://" + c.addr,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.env.certPEM},
		QPS:             200, Burst: 400,
	}
}

// WriteKubeconfig writes a kubeconfig file that authenticates with token.
func (c *Cluster) WriteKubeconfig(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: "https://" + c.addr, CertificateAuthorityData: c.env.certPEM}
	cfg.AuthInfos[c.Name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name}
	cfg.CurrentContext = c.Name
	return clientcmd.WriteToFile(*cfg, path)
}

// ServiceAccountToken creates the namespace and ServiceAccount if needed
// and returns a token for it from the TokenRequest API.
func (c *Cluster) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.EnsureNamespace(t, namespace, nil)
	_, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create ServiceAccount %s/%s: %v", namespace, name, err)
	}
	expiry := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// EnsureNamespace creates a namespace with labels, or sets the labels on
// an existing one.
func (c *Cluster) EnsureNamespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := c.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create namespace %s: %v", name, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("get namespace %s: %v", name, err)
	}
	if len(labels) == 0 {
		return
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	if _, err := c.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", name, err)
	}
}
