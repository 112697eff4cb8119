package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// callTimeout bounds one CLI call once the server answered the handshake.
const callTimeout = membership.CallTimeout

// clientFlags choose the credential a CLI command presents.
type clientFlags struct {
	credential string
	ca         string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.credential, "credential", os.Getenv("FEDERATE_CREDENTIAL"),
		"credential file: the hub's "+hub.AdminCredFile+", or a cluster's "+membership.CredentialFile+" (default $FEDERATE_CREDENTIAL)")
	fs.StringVar(&c.ca, "ca", "", "mesh CA file (default: "+membership.CAFile+" beside the credential)")
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
	if c.credential == "" {
		return "", "", fmt.Errorf("no credential: pass --credential with the hub's %s (in its data directory) or set FEDERATE_CREDENTIAL", hub.AdminCredFile)
	}
	ca = c.ca
	if ca == "" {
		ca = filepath.Join(filepath.Dir(c.credential), membership.CAFile)
	}
	return c.credential, ca, nil
}
