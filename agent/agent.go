package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/trust"
)

// Config configures the agent.
type Config struct {
	// ConfigDir holds the bootstrap files and sidecar.yaml.
	ConfigDir string
	// StateDir is where the agent keeps its SVID (svid.pem) across restarts.
	StateDir string
	// Address, if set, is the VM's IP address; otherwise cluster.env's
	// ISTIO_SVC_IP, otherwise the address the VM reaches the control plane from.
	Address string
	Logger  *slog.Logger
	// Ready, if set, is called once the entry is registered and the
	// sidecar has its first configuration (RunSVID: once the SVID files
	// are written).
	Ready func()
	// SVIDDir is where RunSVID keeps a proxyless application's SVID files;
	// BundleRefresh is how often it refetches the federated roots
	// (default DefaultBundleRefresh).
	SVIDDir       string
	BundleRefresh time.Duration
}

// Agent is the VM agent: bootstrap, SVID renewal, registration, health
// and the sidecar.
type Agent struct {
	cfg Config
	log *slog.Logger

	health    health
	readyOnce sync.Once
	sidecar   atomic.Pointer[Sidecar] // for metrics, once Run made it
	saver     *svidSaver
}

// New returns an agent; it does no I/O.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Agent{
		cfg: cfg, log: cfg.Logger, health: health{changed: make(chan struct{}, 1)},
		saver: &svidSaver{path: filepath.Join(cfg.StateDir, SVIDFile), log: cfg.Logger},
	}
}

// health is the probe's latest result.
type health struct {
	mu      sync.Mutex // guards the fields below
	known   bool
	healthy bool
	message string
	changed chan struct{}
}

func (h *health) set(healthy bool, msg string) {
	h.mu.Lock()
	h.known, h.healthy, h.message = true, healthy, msg
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *health) get() (known, healthy bool, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.known, h.healthy, h.message
}

// Run bootstraps, then registers and serves until ctx is done. Bad
// bootstrap files, a refused token and an unverifiable control plane are
// returned at once, before anything is registered.
func (a *Agent) Run(ctx context.Context) error {
	b, err := LoadBootstrap(a.cfg.ConfigDir)
	if err != nil {
		return err
	}
	sc, err := LoadSidecarConfig(filepath.Join(a.cfg.ConfigDir, SidecarFile))
	if err != nil {
		return err
	}
	if sc.Deprecated != "" {
		a.log.Warn(sc.Deprecated, "file", filepath.Join(a.cfg.ConfigDir, SidecarFile))
	}
	policies, err := LoadPolicies(filepath.Join(a.cfg.ConfigDir, AuthorizationFile), b.Namespace, b.Labels)
	if err != nil {
		return err
	}
	cred, err := a.credential(ctx, b)
	if err != nil {
		return err
	}
	// A connection of its own: the token's had no client certificate.
	cp := newControlPlane(b, cred)
	defer cp.close()
	address := a.cfg.Address
	if address == "" {
		address = b.Address
	}
	if address == "" {
		if address, err = cp.localAddress(); err != nil {
			return fmt.Errorf("agent: find the VM's address (set %s in cluster.env or --address): %w", EnvAddress, err)
		}
	}
	bundles := NewBundles(b.ID.TrustDomain(), b.Roots)
	sidecar, err := NewSidecar(sc, cred, bundles, policies, a.log)
	if err != nil {
		return err
	}
	a.sidecar.Store(sidecar)
	renewer := &trust.Renewer{
		Credential: cred, Logger: a.log,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			resp, err := agentpb.NewWorkloadsClient(cp.conn).Renew(ctx, &agentpb.RenewRequest{Csr: csr})
			if err != nil {
				return nil, err
			}
			return trust.ParseCertificates(resp.GetCertificates())
		},
		OnRenew: func(c *trust.Credential) { a.saver.save(c) },
	}
	reg := &agentpb.Register{
		Address: address, InboundPort: sidecar.InboundPort(), Imports: sidecar.Imports(),
		Probed: b.Probe != nil, Group: b.Group,
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return renewer.Run(ctx) })
	g.Go(func() error { a.saver.run(ctx); return nil })
	g.Go(func() error { return sidecar.Run(ctx) })
	if b.Probe != nil {
		prober := NewProber(b.Probe)
		g.Go(func() error { return prober.Run(ctx, a.health.set) })
	}
	g.Go(func() error { return a.connectLoop(ctx, cp, reg, sidecar) })
	a.log.Info("agent running", "id", cred.ID(), "address", address, "inbound", sidecar.InboundPort(), "control_plane", b.ControlPlane)
	return g.Wait()
}

// credential returns the saved SVID if it is still valid, or trades the
// token for a new one.
func (a *Agent) credential(ctx context.Context, b *Bootstrap) (*trust.Credential, error) {
	path := filepath.Join(a.cfg.StateDir, SVIDFile)
	c, loadErr := trust.LoadCredential(path)
	switch {
	case loadErr == nil && c.ID() == b.ID && time.Now().Before(c.Expiry()):
		a.log.Info("using the saved SVID", "id", c.ID(), "expires", c.Expiry())
		return c, nil
	case loadErr == nil:
		a.log.Warn("the saved SVID is expired or for another identity; using the token", "path", path, "id", c.ID(), "expires", c.Expiry())
	case errors.Is(loadErr, fs.ErrNotExist):
		loadErr = nil // a first start
	default:
		a.log.Warn("the saved SVID does not load; using the token", "path", path, "err", loadErr)
	}
	cred, err := a.bootstrap(ctx, b)
	if err != nil && loadErr != nil {
		// The token is most likely spent: say what failed first.
		return nil, fmt.Errorf("agent: the saved SVID %s does not load (%v), and the token does not replace it: %w", path, loadErr, err)
	}
	return cred, err
}

// bootstrap trades the token for an SVID and saves it.
func (a *Agent) bootstrap(ctx context.Context, b *Bootstrap) (*trust.Credential, error) {
	token, err := b.ReadToken()
	if err != nil {
		return nil, err
	}
	key, err := trust.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := trust.NewCSR(key)
	if err != nil {
		return nil, err
	}
	cp := newControlPlane(b, nil)
	defer cp.close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentpb.NewWorkloadsClient(cp.conn).Bootstrap(cctx, &agentpb.BootstrapRequest{Token: token, Csr: csr})
	if err != nil {
		return nil, cp.explain("trade the token for an SVID", err)
	}
	chain, err := trust.ParseCertificates(resp.GetCertificates())
	if err != nil {
		return nil, err
	}
	cred, err := trust.NewCredential(chain, key)
	if err != nil {
		return nil, err
	}
	if cred.ID() != b.ID {
		return nil, fmt.Errorf("agent: the control plane issued %s, but cluster.env says %s", cred.ID(), b.ID)
	}
	// The token is spent: a save that fails is retried, not fatal.
	a.saver.save(cred)
	a.log.Info("bootstrapped with the token", "id", cred.ID(), "expires", cred.Expiry())
	return cred, nil
}

// Reconnect waits: the first under reconnectFirst, doubling to under
// reconnectMax while the control plane stays away.
const (
	reconnectFirst = 400 * time.Millisecond
	reconnectMax   = 10 * time.Second
)

// connectLoop keeps the registration stream open, reconnecting with
// backoff. A refusal that retrying cannot fix ends the agent.
func (a *Agent) connectLoop(ctx context.Context, cp *controlPlane, reg *agentpb.Register, sidecar *Sidecar) error {
	// Jittered: every VM of a cluster loses its stream when the control
	// plane restarts, and they must not all come back at once.
	backoff := retry.New(reconnectFirst, reconnectMax)
	for {
		var configured atomic.Bool
		err := a.session(ctx, cp, reg, sidecar, &configured)
		if ctx.Err() != nil {
			return nil
		}
		if configured.Load() {
			backoff.Reset() // the stream worked: a new outage starts short
		}
		switch status.Code(err) {
		case codes.PermissionDenied, codes.FailedPrecondition, codes.InvalidArgument:
			return cp.explain("register", err)
		}
		wait := backoff.Next()
		a.log.Warn("control plane stream ended; reconnecting", "err", err, "retry_in", wait)
		if !retry.Sleep(ctx, wait, nil) {
			return nil
		}
	}
}

// session registers and follows one stream; configured is set once a
// configuration arrives on it.
func (a *Agent) session(ctx context.Context, cp *controlPlane, reg *agentpb.Register, sidecar *Sidecar, configured *atomic.Bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := agentpb.NewWorkloadsClient(cp.conn).Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&agentpb.AgentMessage{Body: &agentpb.AgentMessage_Register{Register: reg}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			cfg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			sidecar.Update(cfg)
			configured.Store(true)
			a.log.Debug("configuration from the control plane", "entry", cfg.GetEntry(), "upstreams", len(cfg.GetUpstreams()), "bundles", len(cfg.GetBundles()))
			a.readyOnce.Do(func() {
				a.log.Info("registered", "entry", cfg.GetEntry())
				if a.cfg.Ready != nil {
					a.cfg.Ready()
				}
			})
		}
	}()
	sent := false
	var lastHealthy bool
	var lastMsg string
	for {
		if known, healthy, msg := a.health.get(); known && (!sent || healthy != lastHealthy || msg != lastMsg) {
			err := stream.Send(&agentpb.AgentMessage{Body: &agentpb.AgentMessage_Health{Health: &agentpb.Health{Healthy: healthy, Message: msg}}})
			if err != nil {
				return <-recvErr
			}
			sent, lastHealthy, lastMsg = true, healthy, msg
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case <-a.health.changed:
		}
	}
}

// controlPlane is the agent's connection to its control plane, through the
// cluster's gateway by the control plane's internal name.
type controlPlane struct {
	b    *Bootstrap
	conn *grpc.ClientConn
	cred *trust.Credential // nil for the token call, which needs none
	// verifyErr is the last reason the control plane's certificate failed.
	verifyErr atomic.Pointer[error]
}

func newControlPlane(b *Bootstrap, cred *trust.Credential) *controlPlane {
	cp := &controlPlane{b: b, cred: cred}
	host, _, _ := net.SplitHostPort(b.ControlPlane)
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: true, // verified below: SPIFFE ID against root-cert.pem
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			err := cp.verify(raw)
			if err != nil {
				cp.verifyErr.Store(&err)
			}
			return err
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cp.cred == nil {
				return &tls.Certificate{}, nil
			}
			s, _ := cp.cred.GetX509SVID()
			out := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
			for _, cert := range s.Certificates {
				out.Certificate = append(out.Certificate, cert.Raw)
			}
			return out, nil
		},
	}
	// NewClient only fails on bad options; these are fixed.
	cp.conn, _ = grpc.NewClient("passthrough:///"+b.ControlPlane,
		grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", cp.resolve(addr))
		}),
	)
	return cp
}

func (cp *controlPlane) close() { cp.conn.Close() }

// resolve maps the control plane's name to the address in the hosts file.
func (cp *controlPlane) resolve(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, ok := cp.b.Hosts[strings.ToLower(host)]; ok {
		return net.JoinHostPort(ip, port)
	}
	return addr
}

// verify checks that the server is the control plane named in cluster.env
// and that its chain ends in a root of root-cert.pem.
func (cp *controlPlane) verify(raw [][]byte) error {
	var certs []*x509.Certificate
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return errors.New("no certificate")
	}
	want := cp.b.ControlPlaneID
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return fmt.Errorf("the server certificate: %w", err)
	}
	if id != want {
		return fmt.Errorf("the server is %s, not the control plane %s", id, want)
	}
	if _, _, err := x509svid.Verify(certs, trust.Bundle(want.TrustDomain(), rootsOf(cp.b.Roots, want.TrustDomain())...)); err != nil {
		return fmt.Errorf("the control plane's certificate does not verify against %s: %w", filepath.Join(cp.b.Dir, RootCertFile), err)
	}
	return nil
}

// rootsOf returns the roots that belong to td (or name no trust domain).
func rootsOf(roots []*x509.Certificate, td spiffeid.TrustDomain) []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range roots {
		if len(r.URIs) == 0 {
			out = append(out, r)
			continue
		}
		if rtd, err := spiffeid.TrustDomainFromURI(r.URIs[0]); err == nil && rtd == td {
			out = append(out, r)
		}
	}
	return out
}

// explain turns a call error into one that says what to do.
func (cp *controlPlane) explain(what string, err error) error {
	if p := cp.verifyErr.Load(); p != nil && status.Code(err) == codes.Unavailable {
		return fmt.Errorf("agent: %s: %w (is %s from this cluster's 'federate vm configure'?)", what, *p, RootCertFile)
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("agent: %s at %s: %s", what, cp.b.ControlPlane, st.Message())
	}
	return fmt.Errorf("agent: %s at %s: %w", what, cp.b.ControlPlane, err)
}

// localAddress is the address this host uses toward the control plane.
func (cp *controlPlane) localAddress() (string, error) {
	c, err := net.Dial("udp", cp.resolve(cp.b.ControlPlane))
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
