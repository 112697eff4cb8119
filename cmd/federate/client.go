package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/membership"
	"google.golang.org/grpc"
)

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

func (c *clientFlags) dial(addr string) (*grpc.ClientConn, error) {
	cred, ca, err := c.files()
	if err != nil {
		return nil, err
	}
	return membership.Dial(addr, cred, ca)
}

// dialControlPlane connects to cluster's control plane, directly or
// through its gateway.
func (c *clientFlags) dialControlPlane(addr, cluster string) (*grpc.ClientConn, error) {
	cred, ca, err := c.files()
	if err != nil {
		return nil, err
	}
	return membership.DialControlPlane(addr, cluster, cred, ca)
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
