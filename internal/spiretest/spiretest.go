// Package spiretest runs a real SPIRE server (spire-server, built once by
// 'make spire-server') for the tests of federation with SPIRE: a temporary
// configuration with a sqlite datastore, a disk key manager, loopback
// ports, its own bundle endpoint, and its CLI over the server's socket.
package spiretest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/internal/childproc"
	"github.com/federate/federate/trust"
)

// BinaryEnv names the spire-server binary; 'make spire-server' builds it
// and the Makefile sets this for the tests.
const BinaryEnv = "FEDERATE_SPIRE_SERVER"

// Version is the SPIRE version scripts/build-server.sh builds (the Makefile pins it).
const Version = "v1.13.3"

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
	cliTimeout   = 30 * time.Second
)

// Binary returns the spire-server to run: $FEDERATE_SPIRE_SERVER, or the
// cached build if that is unset. It fails the test, saying how to build
// it, when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(BinaryEnv)
	if bin == "" {
		if cache, err := os.UserCacheDir(); err == nil {
			dir := os.Getenv("FEDERATE_CACHE")
			if dir == "" {
				dir = filepath.Join(cache, "federate")
			}
			bin = filepath.Join(dir, "spire-server-"+Version)
		}
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("no spire-server at %q ($%s): run 'make spire-server' (builds SPIRE %s once into the cache), or 'make test', which builds it and sets $%s",
			bin, BinaryEnv, Version, BinaryEnv)
	}
	return bin
}

// Federation is one federates_with block: a trust domain SPIRE imports.
type Federation struct {
	TrustDomain string
	URL         string
	// EndpointID is the SPIFFE ID an https_spiffe endpoint presents; empty
	// means the https_web profile.
	EndpointID string
}

// Config is what a test chooses of a SPIRE server's configuration.
type Config struct {
	TrustDomain   string
	FederatesWith []Federation
	// WebRoots, a PEM file, is what SPIRE's https_web profile trusts (as
	// the system roots, by SSL_CERT_FILE).
	WebRoots string
}

// Server is a running spire-server.
type Server struct {
	TD spiffeid.TrustDomain
	// BundleURL is its bundle endpoint (https_spiffe, self-serving).
	BundleURL string
	// EndpointID is the SVID its bundle endpoint presents.
	EndpointID spiffeid.ID
	// Config is the server.conf the server runs with, for the docs' sake.
	Config string

	t      testing.TB
	bin    string
	dir    string
	socket string
	log    string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// Start writes the configuration, starts the server and waits until its
// API answers. The server stops with the test.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	bin := Binary(t)
	// The socket path must stay short (108 bytes): not under t.TempDir.
	dir, err := os.MkdirTemp("", "spire-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{
		t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "api.sock"), log: filepath.Join(dir, "spire-server.log"),
		TD: spiffeid.RequireTrustDomainFromString(cfg.TrustDomain), done: make(chan struct{}),
	}
	s.EndpointID = spiffeid.RequireFromPath(s.TD, "/spire/server")
	bindPort, bundlePort := freePort(t), freePort(t)
	s.BundleURL = "https://127.0.0.1:" + strconv.Itoa(bundlePort) + "/"
	s.Config = render(t, cfg, dir, s.socket, bindPort, bundlePort)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(s.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(confPath, cfg.WebRoots)
	t.Cleanup(s.stop)
	s.waitReady()
	return s
}

func (s *Server) start(confPath, webRoots string) {
	t := s.t
	t.Helper()
	f, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.cmd = exec.Command(s.bin, "run", "-config", confPath)
	s.cmd.Stdout, s.cmd.Stderr = f, f
	s.cmd.Env = os.Environ()
	if webRoots != "" {
		s.cmd.Env = append(s.cmd.Env, "SSL_CERT_FILE="+webRoots)
	}
	s.cmd.SysProcAttr = childproc.Attr()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start spire-server: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
}

func (s *Server) waitReady() {
	t := s.t
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		out, err := s.cli("healthcheck")
		if err == nil {
			return
		}
		select {
		case <-s.done:
			t.Fatalf("spire-server exited (%v) before it was ready:\n%s", s.err, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-server not ready after %s: %s\n%s", readyTimeout, out, s.Log())
		}
		time.Sleep(200 * time.Millisecond) // polling a subprocess: no event to wait on
	}
}

func (s *Server) stop() {
	select {
	case <-s.done:
	default:
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	}
	if s.t.Failed() {
		s.t.Logf("spire-server log:\n%s", s.Log())
	}
}

// Log returns the end of the server's log.
func (s *Server) Log() string {
	data, err := os.ReadFile(s.log)
	if err != nil {
		return err.Error()
	}
	const max = 6000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return string(data)
}

// cli runs a spire-server command against this server's socket.
func (s *Server) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	args = append(args, "-socketPath", s.socket)
	cmd := exec.CommandContext(ctx, s.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// CLI runs a spire-server command and fails the test if it fails.
func (s *Server) CLI(args ...string) string {
	s.t.Helper()
	out, err := s.cli(args...)
	if err != nil {
		s.t.Fatalf("spire-server %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// BundleFile writes the server's own bundle in SPIFFE format, as
// 'spire-server bundle show -format spiffe' prints it, and returns its path.
func (s *Server) BundleFile() string {
	s.t.Helper()
	path := filepath.Join(s.dir, "bundle.spiffe.json")
	if err := os.WriteFile(path, []byte(s.CLI("bundle", "show", "-format", "spiffe")), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// FederatedBundle is the bundle SPIRE holds for a federated trust domain.
func (s *Server) FederatedBundle(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	out, err := s.cli("bundle", "list", "-id", td.IDString(), "-output", "json")
	if err != nil {
		return nil, fmt.Errorf("bundle list -id %s: %v: %s", td.IDString(), err, out)
	}
	var b struct {
		X509Authorities []struct {
			ASN1 string `json:"asn1"`
		} `json:"x509_authorities"`
		SequenceNumber json.Number `json:"sequence_number"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		return nil, fmt.Errorf("bundle list -id %s: %v: %s", td.IDString(), err, out)
	}
	bundle := spiffebundle.New(td)
	for _, a := range b.X509Authorities {
		der, err := base64.StdEncoding.DecodeString(a.ASN1)
		if err != nil {
			return nil, err
		}
		certs, err := trust.ParseCertificates([][]byte{der})
		if err != nil {
			return nil, err
		}
		bundle.AddX509Authority(certs[0])
	}
	if seq, err := strconv.ParseUint(b.SequenceNumber.String(), 10, 64); err == nil {
		bundle.SetSequenceNumber(seq)
	}
	return bundle, nil
}

// Refresh makes SPIRE fetch a federated trust domain's bundle now rather
// than at its next poll (a minute at the soonest).
func (s *Server) Refresh(td spiffeid.TrustDomain) error {
	out, err := s.cli("federation", "refresh", "-id", td.Name())
	if err != nil {
		return fmt.Errorf("federation refresh -id %s: %v: %s", td.Name(), err, out)
	}
	return nil
}

// Authorities are the server's X.509 authority IDs by state (active,
// prepared, old), as 'localauthority x509 show' reports them.
func (s *Server) Authorities() (active, prepared, old string) {
	s.t.Helper()
	var st map[string]*struct {
		AuthorityID string `json:"authority_id"`
	}
	out := s.CLI("localauthority", "x509", "show", "-output", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("localauthority x509 show: %v: %s", err, out)
	}
	id := func(k string) string {
		if a := st[k]; a != nil {
			return a.AuthorityID
		}
		return ""
	}
	return id("active"), id("prepared"), id("old")
}

// Mint has SPIRE sign an X.509-SVID for id ('spire-server x509 mint').
func (s *Server) Mint(id spiffeid.ID) *trust.Credential {
	s.t.Helper()
	dir, err := os.MkdirTemp(s.dir, "mint-")
	if err != nil {
		s.t.Fatal(err)
	}
	s.CLI("x509", "mint", "-spiffeID", id.String(), "-ttl", "1h", "-write", dir)
	svid, err := os.ReadFile(filepath.Join(dir, "svid.pem"))
	if err != nil {
		s.t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	if err != nil {
		s.t.Fatal(err)
	}
	both := filepath.Join(dir, "svid-and-key.pem")
	if err := os.WriteFile(both, append(svid, key...), 0o600); err != nil {
		s.t.Fatal(err)
	}
	cred, err := trust.LoadCredential(both)
	if err != nil {
		s.t.Fatalf("the SVID SPIRE minted: %v", err)
	}
	return cred
}
