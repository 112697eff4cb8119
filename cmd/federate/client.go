package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
)

// callTimeout bounds one CLI call once the server answered the handshake.
const callTimeout = membership.CallTimeout

// clientFlags choose the hub a CLI command asks and the credential it
// presents; $FEDERATE_HUB and $FEDERATE_CREDENTIAL stand in for the flags.
type clientFlags struct {
	hub        string
	credential string
	ca         string
}

// register adds --hub (described by hubUsage), --credential and --ca.
func (c *clientFlags) register(cmd *cobra.Command, hubUsage string) {
	fs := cmd.Flags()
	fs.StringVar(&c.hub, "hub", "", hubUsage+" (default $FEDERATE_HUB)")
	fs.StringVar(&c.credential, "credential", "",
		"credential file: the hub's "+hub.AdminCredFile+", or a cluster's "+membership.CredentialFile+" (default $FEDERATE_CREDENTIAL)")
	fs.StringVar(&c.ca, "ca", "", "mesh CA file (default: "+membership.CAFile+" beside the credential)")
}

// hubAddr is --hub, else $FEDERATE_HUB.
func (c *clientFlags) hubAddr() string { return cmp.Or(c.hub, os.Getenv("FEDERATE_HUB")) }

// requireHub is a usage error when neither --hub nor $FEDERATE_HUB names
// the hub.
func (c *clientFlags) requireHub(cmd *cobra.Command) error {
	if c.hubAddr() == "" {
		return cli.Usagef("--hub is required, or set FEDERATE_HUB (see '%s --help')", cmd.CommandPath())
	}
	return c.checkHub()
}

// checkHub is a usage error when --hub or $FEDERATE_HUB, if set, is not
// HOST:PORT (or a comma-separated list of them, every hub replica's).
func (c *clientFlags) checkHub() error {
	if c.hub != "" {
		return checkAddr("--hub", c.hub, exampleHub)
	}
	return checkAddr("$FEDERATE_HUB", os.Getenv("FEDERATE_HUB"), exampleHub)
}

// checkAddr is a usage error when addr, one address or several separated
// by commas, is not HOST:PORT; source names the flag or variable, example
// is a good address.
func checkAddr(source, addr, example string) error {
	for _, a := range membership.HubAddrs(addr) {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			return cli.Usagef("%s %q: want HOST:PORT, e.g. %s", source, a, example)
		}
	}
	return nil
}

// checkCluster is a usage error when name cannot be a cluster's name;
// source names the flag or argument.
func checkCluster(source, name string) error {
	if err := registry.ValidClusterName(name); err != nil {
		return cli.Usagef("%s: %s", source, strings.TrimPrefix(err.Error(), "registry: "))
	}
	return nil
}

// Examples of good addresses, for checkAddr.
const (
	exampleHub          = "203.0.113.10:15012"
	exampleControlPlane = "10.0.0.5:15013"
)

// server names what a CLI command talks to, for its error messages.
type server struct {
	role string // "hub" or "control plane"
	addr string
}

func hubAt(addr string) server { return server{"hub", addr} }

func serverAt(role, addr string) server { return server{role, addr} }

// connect connects to the hub at addr and waits until it answers.
func (c *clientFlags) connect(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	return c.connectTo(ctx, hubAt(addr))
}

// connectTo connects to a hub or control plane and waits until it answers.
func (c *clientFlags) connectTo(ctx context.Context, srv server) (*grpc.ClientConn, error) {
	cred, ca, err := c.files()
	if err != nil {
		return nil, err
	}
	conn, err := membership.Dial(srv.addr, cred, ca)
	if err != nil {
		return nil, err
	}
	return awaitAnswer(ctx, conn, srv)
}

// connectControlPlane connects to cluster's control plane, directly or
// through its gateway, and waits until it answers.
func (c *clientFlags) connectControlPlane(ctx context.Context, addr, cluster string) (*grpc.ClientConn, error) {
	cred, ca, err := c.files()
	if err != nil {
		return nil, err
	}
	conn, err := membership.DialControlPlane(addr, cluster, cred, ca)
	if err != nil {
		return nil, err
	}
	return awaitAnswer(ctx, conn, server{"control plane", addr})
}

func awaitAnswer(ctx context.Context, conn *grpc.ClientConn, srv server) (*grpc.ClientConn, error) {
	if err := membership.AwaitAnswer(ctx, conn); err != nil {
		conn.Close()
		if errors.Is(err, membership.ErrNoAnswer) {
			return nil, srv.noAnswer(fmt.Sprintf("no TLS handshake within %s", membership.AnswerTimeout))
		}
		return nil, err
	}
	return conn, nil
}

// noAnswer says that the server does not answer, and what to check.
func (s server) noAnswer(why string) error {
	return fmt.Errorf("the %s at %s does not answer (%s): check that its process runs and is not stopped or overloaded "+
		"(state T in 'ps' means stopped: 'kill -CONT PID'), and that %s reaches it", s.role, s.addr, why, s.addr)
}

// callError describes a failed call: what was asked, and why it failed.
func (s server) callError(what string, err error) error {
	if status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("%s: %w", what, s.noAnswer(fmt.Sprintf("no reply within %s", callTimeout)))
	}
	return fmt.Errorf("%s: %s", what, s.explain(err))
}

// explain is the message of a failed call's status; for a call that never
// reached the server, what went wrong and what to check.
func (s server) explain(err error) string {
	st := status.Convert(err)
	if st.Code() == codes.Unavailable {
		return membership.ExplainUnreachable(s.role, s.addr, st.Message())
	}
	return st.Message()
}

func (c *clientFlags) files() (credential, ca string, err error) {
	credential, credSource := c.credential, "--credential"
	if credential == "" {
		credential, credSource = os.Getenv("FEDERATE_CREDENTIAL"), "$FEDERATE_CREDENTIAL"
	}
	if credential == "" {
		return "", "", cli.Usagef("no credential: pass --credential with the hub's %s (in its data directory) or set FEDERATE_CREDENTIAL", hub.AdminCredFile)
	}
	if err := checkReadable(credSource+" "+credential, credential, fmt.Sprintf("the hub's %s (in its data directory) or a cluster's %s (in its control plane's data directory)",
		hub.AdminCredFile, membership.CredentialFile)); err != nil {
		return "", "", err
	}
	ca, caSource := c.ca, "--ca "+c.ca
	if ca == "" {
		ca = filepath.Join(filepath.Dir(credential), membership.CAFile)
		caSource = "the mesh CA " + ca + " (beside the credential; --ca names another)"
	}
	if err := checkReadable(caSource, ca, "the mesh CA, "+membership.CAFile+" in the hub's or the cluster's data directory"); err != nil {
		return "", "", err
	}
	return credential, ca, nil
}

// checkReadable says why the command cannot read the file at path:
// missing, a directory, or not readable by this user. what names the file
// and where it came from; want says what the file should be.
func checkReadable(what, path, want string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: want %s", what, want)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: permission denied: it is private to the user that wrote it (mode 0600); run as that user (or with sudo), or use a copy you may read", what)
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory: want %s", what, want)
	}
	return nil
}
