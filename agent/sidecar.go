package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"sigs.k8s.io/yaml"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/trust"
)

// DefaultInboundListen is where the sidecar accepts mTLS, as Istio's
// inbound capture port.
const DefaultInboundListen = "0.0.0.0:15006"

// SidecarConfig is sidecar.yaml: the inbound listener and the services
// the VM imports. The file is an Istio Sidecar resource; the old private
// format (inbound.listen, outbound[]) still reads, with Deprecated set.
type SidecarConfig struct {
	Inbound struct {
		Listen string `json:"listen"`
		// AppHost and AppPort are the ingress defaultEndpoint: where the
		// application listens (default 127.0.0.1), and the port for
		// callers whose service port the control plane does not map.
		AppHost string `json:"-"`
		AppPort uint32 `json:"-"`
	} `json:"inbound"`
	Outbound []Outbound `json:"outbound"`
	// Deprecated is the line to log when the file is in the old format.
	Deprecated string `json:"-"`
}

// Outbound is one imported service: the application connects to Listen in
// plaintext and the sidecar originates mTLS to the service's Port.
type Outbound struct {
	Host   string `json:"host"`
	Port   uint32 `json:"port"`
	Listen string `json:"listen"`
}

// LoadSidecarConfig reads sidecar.yaml, an Istio Sidecar resource or the
// old private format; a missing file means defaults.
func LoadSidecarConfig(path string) (*SidecarConfig, error) {
	c := new(SidecarConfig)
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, &FileError{Path: path, Err: err}
	}
	if err == nil {
		istio, ok, err := parseSidecarFile(path, data)
		switch {
		case err != nil:
			return nil, err
		case ok:
			c = istio
		default:
			if err := yaml.UnmarshalStrict(data, c); err != nil {
				return nil, &FileError{Path: path, Err: fmt.Errorf("%v: write an Istio Sidecar resource (docs/vms.md)", err)}
			}
			c.Deprecated = deprecatedSidecarFormat
		}
	}
	if c.Inbound.Listen == "" {
		c.Inbound.Listen = DefaultInboundListen
	}
	seen := make(map[string]bool)
	for i := range c.Outbound {
		o := &c.Outbound[i]
		if err := (sni.Istio{Port: uint16(o.Port), Host: o.Host}).Validate(); err != nil || o.Port > 65535 {
			return nil, &FileError{Path: path, Err: fmt.Errorf("outbound[%d]: host %q port %d: want a service's hostname and port", i, o.Host, o.Port)}
		}
		if o.Listen == "" {
			o.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(o.Port)))
		}
		if seen[o.Listen] {
			return nil, &FileError{Path: path, Err: fmt.Errorf("outbound[%d]: listen address %s is used twice", i, o.Listen)}
		}
		seen[o.Listen] = true
	}
	return c, nil
}

// Bundles is the set of federated trust domains' roots, replaced whenever
// the control plane sends a new one.
type Bundles struct {
	mu  sync.RWMutex // guards set
	set *x509bundle.Set
}

// NewBundles starts with the roots of one trust domain.
func NewBundles(td spiffeid.TrustDomain, roots []*x509.Certificate) *Bundles {
	return &Bundles{set: x509bundle.NewSet(x509bundle.FromX509Authorities(td, roots))}
}

// Set replaces the bundles with the control plane's.
func (b *Bundles) Set(bundles []*agentpb.TrustBundle) error {
	var list []*x509bundle.Bundle
	for _, tb := range bundles {
		td, err := spiffeid.TrustDomainFromString(tb.GetTrustDomain())
		if err != nil {
			return err
		}
		roots, err := trust.ParseCertificates(tb.GetRoots())
		if err != nil {
			return err
		}
		list = append(list, x509bundle.FromX509Authorities(td, roots))
	}
	b.mu.Lock()
	b.set = x509bundle.NewSet(list...)
	b.mu.Unlock()
	return nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (b *Bundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.set.GetX509BundleForTrustDomain(td)
}

// Sidecar is the VM's proxy: an inbound mTLS listener that forwards to the
// application, and a loopback listener per imported service.
type Sidecar struct {
	cfg       *SidecarConfig
	cred      *trust.Credential
	bundles   *Bundles
	policies  Policies
	log       *slog.Logger
	inbound   net.Listener
	outbounds []net.Listener
	// AppHost is where the application listens (default 127.0.0.1).
	appHost string

	stats sidecarStats

	mu      sync.Mutex        // guards the fields below
	ports   map[uint32]uint32 // service port -> application port
	pickers map[outboundKey]*Picker
}

// outboundKey is an imported service port.
type outboundKey struct {
	host string
	port uint32
}

// NewSidecar binds the sidecar's listeners, so that a busy port fails at
// start; Run serves them.
func NewSidecar(cfg *SidecarConfig, cred *trust.Credential, bundles *Bundles, policies Policies, log *slog.Logger) (*Sidecar, error) {
	s := &Sidecar{
		cfg: cfg, cred: cred, bundles: bundles, policies: policies, log: log, appHost: cmp.Or(cfg.Inbound.AppHost, "127.0.0.1"),
		ports: make(map[uint32]uint32), pickers: make(map[outboundKey]*Picker),
	}
	var err error
	if s.inbound, err = net.Listen("tcp", cfg.Inbound.Listen); err != nil {
		return nil, fmt.Errorf("agent: inbound listener: %w", err)
	}
	for _, o := range cfg.Outbound {
		l, err := net.Listen("tcp", o.Listen)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("agent: outbound listener for %s: %w", o.Host, err)
		}
		s.outbounds = append(s.outbounds, l)
	}
	return s, nil
}

func (s *Sidecar) close() {
	s.inbound.Close()
	for _, l := range s.outbounds {
		l.Close()
	}
}

// InboundPort is the port of the inbound listener.
func (s *Sidecar) InboundPort() uint32 { return uint32(s.inbound.Addr().(*net.TCPAddr).Port) }

// Imports are the hostnames of the imported services.
func (s *Sidecar) Imports() []string {
	var out []string
	for _, o := range s.cfg.Outbound {
		out = append(out, o.Host)
	}
	return out
}

// Update applies the control plane's configuration.
func (s *Sidecar) Update(c *agentpb.AgentConfig) {
	if err := s.bundles.Set(c.GetBundles()); err != nil {
		s.log.Error("bad trust bundle from the control plane; keeping the last", "err", err)
	}
	upstreams := make(map[string]*agentpb.Upstream)
	for _, u := range c.GetUpstreams() {
		upstreams[u.GetHostname()] = u
	}
	// Pickers are built here, once per configuration, not per connection.
	pickers := make(map[outboundKey]*Picker)
	for _, o := range s.cfg.Outbound {
		if u := upstreams[o.Host]; u != nil {
			pickers[outboundKey{o.Host, o.Port}] = NewPicker(u, o.Port)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.ports)
	for _, in := range c.GetInbound() {
		t := in.GetTargetPort()
		if d := s.cfg.Inbound.AppPort; d != 0 && in.GetDefaultTarget() {
			t = d // what the group and the service do not map goes to the defaultEndpoint
		}
		s.ports[in.GetPort()] = t
	}
	s.pickers = pickers
}

// Run serves until ctx is done.
func (s *Sidecar) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	serve := func(l net.Listener, handle func(context.Context, net.Conn)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					handle(ctx, c)
				}()
			}
		}()
	}
	serve(s.inbound, s.handleInbound)
	for i, l := range s.outbounds {
		o := s.cfg.Outbound[i]
		serve(l, func(ctx context.Context, c net.Conn) { s.handleOutbound(ctx, c, o) })
	}
	<-ctx.Done()
	s.close()
	wg.Wait()
	return nil
}

// handleInbound terminates mTLS, authorizes the caller and forwards to the
// application port that the SNI's service port maps to.
func (s *Sidecar) handleInbound(ctx context.Context, c net.Conn) {
	end := s.stats.inbound.begin()
	refusal := handshakeFailed // unless the hello says otherwise
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Any caller whose SVID verifies against a federated bundle completes
	// the handshake; policies decide once the port is known.
	conf := trust.MTLSServer(s.cred, s.bundles, tlsconfig.AuthorizeAny(), s.log)
	var app net.Conn
	var port, target uint32
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var err error
		if port, target, err = s.inboundTarget(hello.ServerName); err != nil {
			refusal = unknownPort
			s.log.Warn("inbound refused", "sni", hello.ServerName, "reason", err)
			return nil, err
		}
		// Reach the application before the handshake completes: a caller
		// whose handshake fails tries its next endpoint, so a stopped
		// application costs it no request.
		if app, err = (&net.Dialer{Timeout: time.Second}).DialContext(hctx, "tcp", net.JoinHostPort(s.appHost, strconv.Itoa(int(target)))); err != nil {
			refusal = appRefused
			s.log.Warn("inbound: the application does not accept", "port", target, "err", err)
			return nil, err
		}
		return nil, nil
	}
	tc := tls.Server(c, conf)
	err := tc.HandshakeContext(hctx)
	if app != nil {
		defer app.Close()
	}
	if err != nil {
		s.log.Debug("inbound handshake failed", "remote", c.RemoteAddr(), "err", err)
		end(refusal)
		return
	}
	caller, err := spiffeIDOf(tc.ConnectionState().PeerCertificates)
	if err != nil {
		end(handshakeFailed)
		return
	}
	if err := s.policies.Allow(caller, port); err != nil {
		s.log.Warn("inbound refused", "caller", caller, "port", port, "reason", err)
		end(denied)
		return
	}
	pipe(ctx, app, tc, &s.stats.inbound)
	end(relayed)
}

// inboundTarget maps the SNI to the service port and application port. An
// SNI that names no port (a plain TLS client) works when the workload
// serves a single port.
func (s *Sidecar) inboundTarget(serverName string) (uint32, uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, err := sni.ParseIstio(serverName); err == nil {
		if t, ok := s.ports[uint32(n.Port)]; ok {
			return uint32(n.Port), t, nil
		}
		if d := s.cfg.Inbound.AppPort; d != 0 {
			return uint32(n.Port), d, nil // the Sidecar's defaultEndpoint
		}
		return 0, 0, fmt.Errorf("no service of this workload has port %d", n.Port)
	}
	targets := make(map[uint32]uint32)
	for p, t := range s.ports {
		targets[t] = p
	}
	if len(targets) == 1 {
		for t, p := range targets {
			return p, t, nil
		}
	}
	return 0, 0, fmt.Errorf("server name %q names no service port, and the workload serves %d ports", serverName, len(targets))
}

// handleOutbound originates mTLS with Istio's SNI to the imported service.
func (s *Sidecar) handleOutbound(ctx context.Context, c net.Conn, o Outbound) {
	end := s.stats.outbound.begin()
	s.mu.Lock()
	picker := s.pickers[outboundKey{o.Host, o.Port}]
	s.mu.Unlock()
	if picker == nil {
		s.log.Warn("outbound: no endpoints known yet", "host", o.Host)
		end(noEndpoints)
		return
	}
	name := sni.Istio{Port: uint16(o.Port), Host: o.Host}.String()
	var lastErr error
	for t := range picker.Tries() {
		dport := t.GetPorts()[o.Port]
		conf := trust.MTLSClient(s.cred, s.bundles, authorizeTarget(t), s.log)
		conf.ServerName = name
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: conf}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		server, err := d.DialContext(dctx, "tcp", net.JoinHostPort(t.GetAddress(), strconv.Itoa(int(dport))))
		cancel()
		if err != nil {
			lastErr = err
			s.log.Debug("outbound connect failed; trying the next target", "host", o.Host, "target", t.GetAddress(), "err", err)
			continue
		}
		defer server.Close()
		pipe(ctx, c, server, &s.stats.outbound)
		end(relayed)
		return
	}
	if lastErr == nil {
		s.log.Warn("outbound: no target may take traffic (none known, or all unhealthy)", "host", o.Host, "port", o.Port)
		end(noEndpoints)
		return
	}
	s.log.Warn("outbound: no target accepted", "host", o.Host, "port", o.Port, "err", lastErr)
	end(connectFailed)
}

// authorizeTarget accepts the SPIFFE IDs the target's endpoints carry, or
// any federated ID when they carry none.
func authorizeTarget(t *agentpb.Target) tlsconfig.Authorizer {
	if len(t.GetSpiffeIds()) == 0 {
		return tlsconfig.AuthorizeAny()
	}
	var ids []spiffeid.ID
	for _, s := range t.GetSpiffeIds() {
		if id, err := spiffeid.FromString(s); err == nil {
			ids = append(ids, id)
		}
	}
	return tlsconfig.AuthorizeOneOf(ids...)
}

func spiffeIDOf(certs []*x509.Certificate) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("no certificate")
	}
	if len(certs[0].URIs) != 1 {
		return spiffeid.ID{}, errors.New("no SPIFFE ID")
	}
	return spiffeid.FromURI(certs[0].URIs[0])
}

// pipe copies both ways between the local application's connection and
// the remote side's until both directions are done, half-closing each side
// when the other finishes writing, and counts the bytes in f.
func pipe(ctx context.Context, local, remote net.Conn, f *flowStats) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn, n *atomic.Uint64) {
		_, _ = io.Copy(countingWriter{dst, n}, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go cp(remote, local, &f.sent)
	go cp(local, remote, &f.received)
	for n := 0; n < 2; {
		select {
		case <-done:
			n++
		case <-ctx.Done():
			local.Close()
			remote.Close()
			for ; n < 2; n++ {
				<-done
			}
		}
	}
}
