//go:build unix

package main

import (
	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/internal/lab"
)

// labEtcdCommand runs one member of an HA lab's etcd: etcd's own server,
// embedded, so that 'lab up --ha' needs nothing but this binary.
func labEtcdCommand() *cobra.Command {
	var opts lab.EtcdOptions
	cmd := command("etcd --name NAME --data-dir DIR --client-url URL --peer-url URL --initial-cluster LIST --cert FILE --key FILE --ca FILE",
		"run one member of the lab's etcd",
		"Runs one etcd member of an HA lab (etcd's server, embedded): clients over\n"+
			"TLS with a certificate of --ca, peers over plain HTTP on loopback.\n"+
			"'federate lab up --ha' starts three.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "name", "data-dir", "client-url", "peer-url", "initial-cluster", "cert", "key", "ca"); err != nil {
				return err
			}
			if opts.LogFormat != "text" && opts.LogFormat != "json" {
				return cli.Usagef("--log-format %q: want text or json", opts.LogFormat)
			}
			return lab.RunEtcd(c.Context(), opts)
		})
	cmd.Hidden = true
	fs := cmd.Flags()
	fs.StringVar(&opts.Name, "name", "", "member name")
	fs.StringVar(&opts.DataDir, "data-dir", "", "the member's data directory")
	fs.StringVar(&opts.Client, "client-url", "", "client URL to listen on and advertise, https://IP:PORT")
	fs.StringVar(&opts.Peer, "peer-url", "", "peer URL to listen on and advertise, http://IP:PORT")
	fs.StringVar(&opts.InitialCluster, "initial-cluster", "", "every member as NAME=PEER-URL, comma-separated")
	fs.StringVar(&opts.CertFile, "cert", "", "serving certificate (PEM)")
	fs.StringVar(&opts.KeyFile, "key", "", "key of --cert (PEM)")
	fs.StringVar(&opts.CAFile, "ca", "", "CA of the client certificates etcd accepts (PEM)")
	fs.StringVar(&opts.LogLevel, "log-level", "info", "log level: debug, info, warn or error (etcd logs warnings and errors below debug)")
	fs.StringVar(&opts.LogFormat, "log-format", "text", "log format: text or json")
	return cmd
}
