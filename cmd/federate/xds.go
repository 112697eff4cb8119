package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/trust"
)

func xdsCommand() *cobra.Command {
	return cli.Group("xds", "write a proxyless gRPC application's xDS bootstrap (xds bootstrap)", "Writes xDS configuration for proxyless gRPC applications.", xdsBootstrapCommand())
}

func xdsBootstrapCommand() *cobra.Command {
	var b xds.GRPCBootstrap
	var svidDir, out string
	cmd := command("bootstrap --control-plane HOST:PORT --namespace NS --name NAME [--svid-dir DIR] [-o FILE]",
		"write a proxyless gRPC application's xDS bootstrap",
		"Writes the xDS bootstrap of a proxyless gRPC application (grpc-go, grpc-java,\n"+
			"grpc C++): point GRPC_XDS_BOOTSTRAP at the file and dial xds:///HOST:PORT, for\n"+
			"example xds:///order.shop.svc.cluster.local:9090. It says:\n"+
			"  xds_servers            the control plane (--control-plane), over mTLS with\n"+
			"                         the application's SVID, verified by controlplane-ca.pem\n"+
			"  node                   sidecar~IP~NAME.NS~NS.svc.cluster.local: a client of NS\n"+
			"  certificate_providers  \"default\", a file_watcher over the SVID files, which\n"+
			"                         the clusters' TLS settings name: calls are mTLS and\n"+
			"                         accept only the SPIFFE IDs of the service's endpoints\n"+
			"The SVID files (svid.pem, bundle.pem, controlplane-ca.pem in --svid-dir) come\n"+
			"from 'federate-agent svid', which keeps them renewed. The application needs\n"+
			"xDS credentials (grpc-go: credentials/xds) and, to call other clusters\n"+
			"through their gateways, GRPC_EXPERIMENTAL_XDS_SNI=true. See\n"+
			"docs/proxyless-grpc.md.",
		func(c *cobra.Command) error { return writeXDSBootstrap(c, b, svidDir, out) })
	fs := cmd.Flags()
	fs.StringVar(&b.Server, "control-plane", "", "HOST:PORT of the cluster's control plane; HOST must be in its certificate:\n"+
		"controlplane.<cluster>.federate.internal:15443 through the gateway (map the name to the\n"+
		"gateway in /etc/hosts), or a name or address given to 'federate controlplane --serving-name'")
	fs.StringVar(&b.Namespace, "namespace", "", "the application's namespace; its SVID must be of the same namespace")
	fs.StringVar(&b.Name, "name", "", "the application's name (a DNS label), for the node ID")
	fs.StringVar(&b.IP, "ip", "127.0.0.1", "the application's IP address, for the node ID")
	fs.StringVar(&svidDir, "svid-dir", agent.DefaultSVIDDir, "the directory 'federate-agent svid --svid-dir' keeps the SVID files in")
	fs.DurationVar(&b.RefreshInterval, "refresh-interval", xds.DefaultRefreshInterval, "how often the application rereads the SVID files")
	fs.StringVarP(&out, "output", "o", "-", "file to write the bootstrap to; - is standard output")
	cmd.Example = "  federate xds bootstrap --control-plane controlplane.east.federate.internal:15443 \\\n" +
		"      --namespace shop --name checkout -o bootstrap.json"
	return cmd
}

func writeXDSBootstrap(c *cobra.Command, b xds.GRPCBootstrap, svidDir, out string) error {
	stdout, stderr := c.OutOrStdout(), c.ErrOrStderr()
	if err := cli.Required(c, "control-plane", "namespace", "name"); err != nil {
		return err
	}
	if !filepath.IsAbs(svidDir) {
		return cli.Usagef("--svid-dir %q: want an absolute path, since the application may run elsewhere", svidDir)
	}
	// The same SVID file is the certificate and the key: renewed in one
	// rename, the watcher never pairs a new chain with an old key.
	b.CertificateFile = filepath.Join(svidDir, agent.SVIDPEMFile)
	b.KeyFile = b.CertificateFile
	b.RootsFile = filepath.Join(svidDir, agent.BundleFile)
	b.ControlPlaneRootsFile = filepath.Join(svidDir, agent.ControlPlaneCAFile)
	data, err := b.JSON()
	if err != nil {
		return cli.Usagef("%w (see 'federate xds bootstrap --help')", err)
	}
	data = append(data, '\n')
	if out == "-" {
		_, err := stdout.Write(data)
		return err
	}
	if err := trust.WriteFileAtomic(out, data, 0o644); err != nil {
		return fmt.Errorf("-o: %w", err)
	}
	fmt.Fprintf(stderr, "Wrote the xDS bootstrap of %s/%s to %s: set GRPC_XDS_BOOTSTRAP=%s\n", b.Namespace, b.Name, out, out)
	return nil
}
