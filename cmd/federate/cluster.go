package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub/hubpb"
)

func clusterCommand() *cobra.Command {
	return cli.Group("cluster", "remove a cluster from the federation (cluster remove)", "Manages the federation's clusters.", clusterRemoveCommand())
}

func clusterRemoveCommand() *cobra.Command {
	var client clientFlags
	var out cli.Output
	cmd := &cobra.Command{
		Use:   "remove NAME --hub ADDR",
		Short: "remove a cluster from the federation",
		Long: "Removes a cluster from the federation: its slice and bundle are withdrawn from\n" +
			"every member, and its credential is refused from then on. It can come back\n" +
			"only by joining again with a new token.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("name the cluster to remove: federate cluster remove NAME --hub ADDR")
			}
			return cli.NoArgs(nil, args[1:])
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkCluster("NAME", args[0]); err != nil {
				return err
			}
			if err := client.requireHub(c); err != nil {
				return err
			}
			if err := out.Check(); err != nil {
				return err
			}
			return removeCluster(c, &client, &out, args[0])
		},
	}
	client.register(cmd, "hub address")
	out.Register(cmd)
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return client.completeClusters(c, args, toComplete)
	}
	cmd.Example = "  federate cluster remove central --hub 203.0.113.10:15012 \\\n" +
		"      --credential /var/lib/federate-hub/admin.pem"
	return cmd
}

func removeCluster(c *cobra.Command, client *clientFlags, out *cli.Output, cluster string) error {
	hubAddr := client.hubAddr()
	conn, err := client.connect(c.Context(), hubAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(c.Context(), callTimeout)
	defer cancel()
	resp, err := hubpb.NewHubClient(conn).RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: cluster})
	if err != nil {
		return hubAt(hubAddr).callError("remove "+cluster, err)
	}
	return out.Print(c.OutOrStdout(), removalView(cluster, resp), func(w io.Writer) error {
		writeRemoval(w, cluster, resp)
		return nil
	})
}

// writeRemoval says what a removal revoked.
func writeRemoval(w io.Writer, cluster string, resp *hubpb.RemoveClusterResponse) {
	at := time.Unix(0, resp.GetRemovedAt()).UTC().Format(time.RFC3339)
	fmt.Fprintf(w, "Cluster %q removed at %s.\n", cluster, at)
	fmt.Fprintf(w, "  services withdrawn everywhere: %d (and its trust bundle)\n", resp.GetServicesWithdrawn())
	fmt.Fprintf(w, "  credentials revoked: every one issued to %s until %s; unexpired ones the hub issued: %d\n", cluster, at, len(resp.GetCredentials()))
	for _, c := range resp.GetCredentials() {
		fmt.Fprintf(w, "    serial %s, issued %s, would have expired %s\n", c.GetSerial(),
			time.Unix(c.GetIssuedAt(), 0).UTC().Format(time.RFC3339), time.Unix(c.GetExpiresAt(), 0).UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  unused join tokens revoked: %d\n", resp.GetTokensRevoked())
	fmt.Fprintf(w, "  hub streams closed: %d\n", resp.GetStreamsClosed())
	fmt.Fprintln(w, "It can come back only by joining again with a new token.")
}

// removalJSON is 'federate cluster remove -o json|yaml'.
type removalJSON struct {
	Cluster           string           `json:"cluster"`
	RemovedAt         string           `json:"removedAt"`
	ServicesWithdrawn int32            `json:"servicesWithdrawn"`
	Credentials       []credentialJSON `json:"revokedCredentials"`
	TokensRevoked     int32            `json:"tokensRevoked"`
	StreamsClosed     int32            `json:"streamsClosed"`
}

type credentialJSON struct {
	Serial    string `json:"serial"`
	IssuedAt  string `json:"issuedAt"`
	ExpiresAt string `json:"expiresAt"`
}

func removalView(cluster string, resp *hubpb.RemoveClusterResponse) removalJSON {
	v := removalJSON{
		Cluster: cluster, RemovedAt: time.Unix(0, resp.GetRemovedAt()).UTC().Format(time.RFC3339Nano),
		ServicesWithdrawn: resp.GetServicesWithdrawn(), Credentials: []credentialJSON{},
		TokensRevoked: resp.GetTokensRevoked(), StreamsClosed: resp.GetStreamsClosed(),
	}
	for _, c := range resp.GetCredentials() {
		v.Credentials = append(v.Credentials, credentialJSON{Serial: c.GetSerial(),
			IssuedAt: time.Unix(c.GetIssuedAt(), 0).UTC().Format(time.RFC3339), ExpiresAt: time.Unix(c.GetExpiresAt(), 0).UTC().Format(time.RFC3339)})
	}
	return v
}
