package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"google.golang.org/grpc/status"
)

func runTrust(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprintln(stderr, "Usage: federate trust rotate --cluster NAME --hub ADDR [--wait]")
		return errors.New("want 'trust rotate'")
	}
	fs := newFlags("trust rotate", "trust rotate --cluster NAME --hub ADDR [--wait]",
		"Rotates a cluster's root without failed requests: the control plane adds a new\n"+
			"root to its bundle, waits until every live member has it, switches signing to\n"+
			"it, and drops the old root once every SVID the old root signed has expired.\n"+
			"Without --wait the command returns once signing has switched; the rest\n"+
			"happens in the background and 'federate status' shows the phase.", stdout)
	var cluster, hubAddr string
	var wait bool
	var client clientFlags
	fs.StringVar(&cluster, "cluster", "", "cluster whose root to rotate")
	fs.StringVar(&hubAddr, "hub", "", "hub address, to find the cluster's control plane")
	fs.BoolVar(&wait, "wait", false, "wait until the old root is dropped")
	client.register(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if err := required(fs, "cluster", "hub"); err != nil {
		return err
	}
	addr, err := controlPlaneAddr(ctx, &client, hubAddr, cluster)
	if err != nil {
		return err
	}
	conn, err := client.connectControlPlane(ctx, addr, cluster)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := hubpb.NewControlPlaneClient(conn).RotateRoot(ctx, &hubpb.RotateRootRequest{Wait: wait})
	if err != nil {
		return fmt.Errorf("rotate %s: %s", cluster, status.Convert(err).Message())
	}
	start := time.Now()
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			fmt.Fprintf(stdout, "Rotation of %s: done after %s.\n", cluster, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if err != nil {
			return fmt.Errorf("rotate %s: %s", cluster, status.Convert(err).Message())
		}
		fmt.Fprintf(stdout, "[%s] %-8s bundle sequence %d: %s\n", time.Since(start).Round(time.Millisecond), p.GetPhase(), p.GetBundleSequence(), p.GetMessage())
	}
}

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "remove" {
		fmt.Fprintln(stderr, "Usage: federate cluster remove NAME --hub ADDR")
		return errors.New("want 'cluster remove'")
	}
	fs := newFlags("cluster remove", "cluster remove NAME --hub ADDR",
		"Removes a cluster from the federation: its slice and bundle are withdrawn from\n"+
			"every member, and its credential is refused from then on. It can come back\n"+
			"only by joining again with a new token.", stdout)
	var cluster, hubAddr string
	var client clientFlags
	fs.StringVar(&hubAddr, "hub", os.Getenv("FEDERATE_HUB"), "hub address (default $FEDERATE_HUB)")
	client.register(fs)
	args = args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cluster, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if cluster == "" {
		fs.Usage()
		return errors.New("name the cluster to remove: federate cluster remove NAME --hub ADDR")
	}
	if err := required(fs, "hub"); err != nil {
		return err
	}
	conn, err := client.connect(ctx, hubAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := hubpb.NewHubClient(conn).RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: cluster})
	if err != nil {
		return hubAt(hubAddr).callError("remove "+cluster, err)
	}
	writeRemoval(stdout, cluster, resp)
	return nil
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

// controlPlaneAddr looks up a cluster's federation API address at the hub.
func controlPlaneAddr(ctx context.Context, client *clientFlags, hubAddr, cluster string) (string, error) {
	conn, err := client.connect(ctx, hubAddr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st, err := hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		return "", hubAt(hubAddr).callError("status from "+hubAddr, err)
	}
	for _, c := range st.GetClusters() {
		if c.GetName() == cluster {
			if c.GetApiAddress() == "" {
				return "", fmt.Errorf("cluster %q has not published its control plane's address yet", cluster)
			}
			return c.GetApiAddress(), nil
		}
	}
	return "", fmt.Errorf("the hub knows no cluster %q; 'federate status --hub %s' lists them", cluster, hubAddr)
}
