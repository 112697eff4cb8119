package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
)

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "Usage: federate token create --hub ADDR --cluster NAME [--ttl 1h]")
		return fmt.Errorf("want 'token create'")
	}
	fs := newFlags("token create", "token create --hub ADDR --cluster NAME [--ttl 1h]",
		"Mints a one-time join token for one cluster. The token carries the hub's\n"+
			"address and CA fingerprint; give it to 'federate join' on that cluster.\n"+
			"It works once, for that cluster name only, until it expires.\n\n"+
			"Example:\n"+
			"  federate token create --hub 203.0.113.10:15012 --cluster east \\\n"+
			"      --credential /var/lib/federate-hub/admin.pem", stdout)
	var hubAddr, cluster, trustDomain string
	var ttl time.Duration
	var client clientFlags
	fs.StringVar(&hubAddr, "hub", "", "hub address")
	fs.StringVar(&cluster, "cluster", "", "name of the cluster the token admits")
	fs.DurationVar(&ttl, "ttl", membership.DefaultTokenTTL, "how long the token is valid")
	fs.StringVar(&trustDomain, "trust-domain", "", "the trust domain the cluster may speak for (default <cluster>.<mesh>; clusters sharing a plug-in root use one)")
	client.register(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if err := required(fs, "hub", "cluster"); err != nil {
		return err
	}
	if ttl < time.Second {
		return fmt.Errorf("--ttl %s is too short", ttl)
	}
	conn, err := client.connect(ctx, hubAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := hubpb.NewHubClient(conn).CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: cluster, TtlSeconds: int64(ttl / time.Second), TrustDomain: trustDomain})
	if err != nil {
		return hubAt(hubAddr).callError("create token at "+hubAddr, err)
	}
	fmt.Fprintln(stdout, resp.GetToken())
	fmt.Fprintf(stderr, "Token for cluster %q, valid until %s. Use it once: federate join --token <token> --data-dir DIR\n",
		cluster, time.Unix(resp.GetExpiresAt(), 0).UTC().Format(time.RFC3339))
	return nil
}
