package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
)

func tokenCommand() *cobra.Command {
	return cli.Group("token", "create join tokens (token create)", "Creates one-time join tokens for clusters.", tokenCreateCommand())
}

// tokenJSON is 'federate token create -o json|yaml'.
type tokenJSON struct {
	Token     string `json:"token"`
	Cluster   string `json:"cluster"`
	ExpiresAt string `json:"expiresAt"`
}

func tokenCreateCommand() *cobra.Command {
	var cluster, trustDomain string
	var ttl time.Duration
	var client clientFlags
	var out cli.Output
	cmd := command("create --hub ADDR --cluster NAME [--ttl 1h]", "mint a one-time join token for one cluster",
		"Mints a one-time join token for one cluster. The token carries the hub's\n"+
			"address and CA fingerprint; give it to 'federate join' on that cluster.\n"+
			"It works once, for that cluster name only, until it expires. With -o table\n"+
			"the token alone is printed (a note goes to stderr), for scripts.",
		func(c *cobra.Command) error {
			if err := client.requireHub(c); err != nil {
				return err
			}
			if err := cli.Required(c, "cluster"); err != nil {
				return err
			}
			if err := checkCluster("--cluster", cluster); err != nil {
				return err
			}
			if err := out.Check(); err != nil {
				return err
			}
			if ttl < time.Second {
				return cli.Usagef("--ttl %s is too short", ttl)
			}
			if ttl > hub.MaxTokenTTL {
				return cli.Usagef("--ttl %s is longer than the hub grants, %s: the token is a bearer secret, keep it short", ttl, hub.MaxTokenTTL)
			}
			return createToken(c, &client, &out, &hubpb.CreateTokenRequest{Cluster: cluster, TtlSeconds: int64(ttl / time.Second), TrustDomain: trustDomain})
		})
	cmd.Example = "  federate token create --hub 203.0.113.10:15012 --cluster east \\\n" +
		"      --credential /var/lib/federate-hub/admin.pem"
	fs := cmd.Flags()
	fs.StringVar(&cluster, "cluster", "", "name of the cluster the token admits")
	fs.DurationVar(&ttl, "ttl", membership.DefaultTokenTTL, "how long the token is valid, at most "+hub.MaxTokenTTL.String())
	fs.StringVar(&trustDomain, "trust-domain", "", "the trust domain the cluster may speak for (default <cluster>.<mesh>; clusters sharing a plug-in root use one)")
	client.register(cmd, "hub address")
	out.Register(cmd)
	return cmd
}

func createToken(c *cobra.Command, client *clientFlags, out *cli.Output, req *hubpb.CreateTokenRequest) error {
	hubAddr := client.hubAddr()
	conn, err := client.connect(c.Context(), hubAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(c.Context(), callTimeout)
	defer cancel()
	resp, err := hubpb.NewHubClient(conn).CreateToken(ctx, req)
	if err != nil {
		return hubAt(hubAddr).callError("create token at "+hubAddr, err)
	}
	expires := time.Unix(resp.GetExpiresAt(), 0).UTC().Format(time.RFC3339)
	v := tokenJSON{Token: resp.GetToken(), Cluster: req.GetCluster(), ExpiresAt: expires}
	return out.Print(c.OutOrStdout(), v, func(w io.Writer) error {
		fmt.Fprintln(w, v.Token)
		fmt.Fprintf(c.ErrOrStderr(), "Token for cluster %q, valid until %s. Use it once: federate join --token <token> --data-dir DIR\n", v.Cluster, expires)
		return nil
	})
}
