package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub/hubpb"
)

func trustCommand() *cobra.Command {
	return cli.Group("trust", "rotate a cluster's root (trust rotate)", "Manages clusters' roots.", trustRotateCommand())
}

// rotationJSON is one line of 'federate trust rotate -o json' (one
// document of -o yaml).
type rotationJSON struct {
	Cluster        string `json:"cluster"`
	ElapsedMs      int64  `json:"elapsedMs"`
	Phase          string `json:"phase"`
	BundleSequence uint64 `json:"bundleSequence"`
	Message        string `json:"message"`
}

func trustRotateCommand() *cobra.Command {
	var cluster string
	var wait bool
	var client clientFlags
	var out cli.Output
	cmd := command("rotate --cluster NAME --hub ADDR [--wait]", "rotate a cluster's root without failed requests",
		"Rotates a cluster's root without failed requests: the control plane adds a new\n"+
			"root to its bundle, waits until every live member has it, switches signing to\n"+
			"it, and drops the old root once every SVID the old root signed has expired.\n"+
			"Without --wait the command returns once signing has switched; the rest\n"+
			"happens in the background and 'federate status' shows the phase. With -o json\n"+
			"each step is one JSON object on its own line; with -o yaml one document.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "cluster"); err != nil {
				return err
			}
			if err := checkCluster("--cluster", cluster); err != nil {
				return err
			}
			if err := client.requireHub(c); err != nil {
				return err
			}
			if err := out.Check(); err != nil {
				return err
			}
			return rotate(c, &client, &out, cluster, wait)
		})
	fs := cmd.Flags()
	fs.StringVar(&cluster, "cluster", "", "cluster whose root to rotate")
	fs.BoolVar(&wait, "wait", false, "wait until the old root is dropped")
	client.register(cmd, "hub address, to find the cluster's control plane")
	out.Register(cmd)
	_ = cmd.RegisterFlagCompletionFunc("cluster", client.completeClusters)
	cmd.Example = "  federate trust rotate --cluster east --hub 203.0.113.10:15012 \\\n" +
		"      --credential /var/lib/federate-hub/admin.pem\n\n" +
		"  # return once the old root is dropped (after the control plane's --max-svid-ttl)\n" +
		"  federate trust rotate --cluster east --wait"
	return cmd
}

func rotate(c *cobra.Command, client *clientFlags, out *cli.Output, cluster string, wait bool) error {
	ctx, stdout := c.Context(), c.OutOrStdout()
	addr, err := controlPlaneAddr(ctx, client, client.hubAddr(), cluster)
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
		return fmt.Errorf("rotate %s: %s", cluster, serverAt("control plane", addr).explain(err))
	}
	start := time.Now()
	for n := 0; ; n++ {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if out.Table() {
				fmt.Fprintf(stdout, "Rotation of %s: done after %s.\n", cluster, time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("rotate %s: %s", cluster, serverAt("control plane", addr).explain(err))
		}
		elapsed := time.Since(start).Round(time.Millisecond)
		v := rotationJSON{Cluster: cluster, ElapsedMs: elapsed.Milliseconds(), Phase: p.GetPhase(), BundleSequence: p.GetBundleSequence(), Message: p.GetMessage()}
		if err := printRotation(stdout, out, n, v, elapsed); err != nil {
			return err
		}
	}
}

// printRotation writes one step: a table row, a JSON line or a YAML
// document.
func printRotation(w io.Writer, out *cli.Output, n int, v rotationJSON, elapsed time.Duration) error {
	switch out.Format() {
	case "table":
		_, err := fmt.Fprintf(w, "[%s] %-8s bundle sequence %d: %s\n", elapsed, v.Phase, v.BundleSequence, v.Message)
		return err
	case "json":
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	if n > 0 {
		fmt.Fprintln(w, "---")
	}
	return out.Print(w, v, nil)
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
