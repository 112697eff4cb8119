package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/membership"
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
	return nil
}

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
	return fmt.Errorf("%s: %s", what, status.Convert(err).Message())
}

func (c *clientFlags) files() (credential, ca string, err error) {
	credential = cmp.Or(c.credential, os.Getenv("FEDERATE_CREDENTIAL"))
	if credential == "" {
		return "", "", cli.Usagef("no credential: pass --credential with the hub's %s (in its data directory) or set FEDERATE_CREDENTIAL", hub.AdminCredFile)
	}
	ca = c.ca
	if ca == "" {
		ca = filepath.Join(filepath.Dir(credential), membership.CAFile)
	}
	return credential, ca, nil
}
