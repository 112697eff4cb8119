package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"time"

	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/registry/file"
)

func vmCommand() *cobra.Command {
	return cli.Group("vm", "onboard VMs of an Istio WorkloadGroup (vm configure)", "Onboards VMs into a cluster of the federation.", vmConfigureCommand())
}

// vmFlags are the flags of 'federate vm configure'.
type vmFlags struct {
	groupFile, cluster, outDir, cpAddr, gateway, internalIP string
	ttl                                                     time.Duration
	client                                                  clientFlags
}

func vmConfigureCommand() *cobra.Command {
	var f vmFlags
	cmd := command("configure -f workloadgroup.yaml --cluster NAME -o DIR (--hub ADDR | --control-plane ADDR) [flags]",
		"write the bootstrap files of a WorkloadGroup's VMs",
		"Onboards VMs of an Istio WorkloadGroup into a cluster: the cluster's control\n"+
			"plane records the group and mints a short-lived one-time token bound to it,\n"+
			"and DIR receives the files to copy to each VM's /etc/federate:\n"+
			"  cluster.env    the VM's identity and the control plane's address\n"+
			"  mesh.yaml      proxy configuration with the group's readiness probe\n"+
			"  root-cert.pem  the roots that verify the control plane\n"+
			"  istio-token    the one-time token (mode 0600; one VM uses it once)\n"+
			"  hosts          maps the control plane's name to the cluster's gateway\n"+
			"The group's spec.template.serviceAccount is required: VMs get its SPIFFE ID.\n"+
			"Run it again for a new token when a VM has used the last one.",
		func(c *cobra.Command) error { return runVMConfigure(c, &f) })
	fs := cmd.Flags()
	fs.StringVarP(&f.groupFile, "file", "f", "", "the WorkloadGroup YAML file (networking.istio.io)")
	fs.StringVar(&f.cluster, "cluster", "", "the cluster the VMs join")
	fs.StringVarP(&f.outDir, "output", "o", "", "directory to write the bootstrap files into")
	fs.StringVar(&f.cpAddr, "control-plane", "", "the cluster's control plane address, instead of asking the hub")
	fs.StringVar(&f.gateway, "gateway", "", "IP:port at which VMs reach the cluster's east-west gateway (default: the gateway the cluster announces)")
	fs.StringVar(&f.internalIP, "internal-ip", "", "the VM's IP address, written as ISTIO_SVC_IP (default: the agent finds it)")
	fs.DurationVar(&f.ttl, "token-ttl", workloads.DefaultTokenTTL, "how long the token is valid; the VM needs it only for its first start")
	f.client.register(cmd, "hub address, to find the cluster's control plane")
	_ = cmd.RegisterFlagCompletionFunc("cluster", f.client.completeClusters)
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	_ = cmd.MarkFlagDirname("output")
	cmd.Example = "  federate vm configure -f payment-vms.yaml --cluster west -o ./payment-vm \\\n" +
		"      --hub 203.0.113.10:15012 --credential /var/lib/federate-hub/admin.pem"
	return cmd
}

func runVMConfigure(c *cobra.Command, f *vmFlags) (err error) {
	ctx, stdout := c.Context(), c.OutOrStdout()
	if err := cli.Required(c, "file", "cluster", "output"); err != nil {
		return err
	}
	if err := checkCluster("--cluster", f.cluster); err != nil {
		return err
	}
	hubAddr := f.client.hubAddr()
	if hubAddr == "" && f.cpAddr == "" {
		return cli.Usagef("--hub (or $FEDERATE_HUB) or --control-plane is required (see 'federate vm configure --help')")
	}
	if f.cpAddr != "" {
		if err := checkAddr("--control-plane", f.cpAddr, exampleControlPlane); err != nil {
			return err
		}
	} else if err := f.client.checkHub(); err != nil {
		return err
	}
	if f.internalIP != "" {
		if _, err := netip.ParseAddr(f.internalIP); err != nil {
			return cli.Usagef("--internal-ip %q is not an IP address", f.internalIP)
		}
	}
	ns, name, spec, err := readWorkloadGroup(f.groupFile)
	if err != nil {
		return err
	}
	wg, err := workloads.ParseWorkloadGroupSpec(ns, name, spec)
	if err != nil {
		return fmt.Errorf("%s: %w", f.groupFile, err)
	}
	// The control plane makes a token for each call: find out now, not
	// after, that the files cannot be written.
	_, statErr := os.Stat(f.outDir)
	if err := checkWritableDir(f.outDir, 0o755); err != nil {
		return fmt.Errorf("--output %s: %w; no token was made: pick a directory this user may write", f.outDir, err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// Made for the check: gone again unless the files are written.
		defer func() {
			if err != nil {
				os.Remove(f.outDir)
			}
		}()
	}
	cpAddr := f.cpAddr
	if cpAddr == "" {
		if cpAddr, err = controlPlaneAddr(ctx, &f.client, hubAddr, f.cluster); err != nil {
			return err
		}
	}
	conn, err := f.client.connectControlPlane(ctx, cpAddr, f.cluster)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentpb.NewWorkloadsClient(conn).CreateBootstrap(cctx, &agentpb.CreateBootstrapRequest{
		Namespace: ns, Name: name, SpecJson: spec, TtlSeconds: int64(f.ttl / time.Second),
	})
	if err != nil {
		return fmt.Errorf("control plane of %s: %s", f.cluster, serverAt("control plane", cpAddr).explain(err))
	}
	gateway := cmp.Or(f.gateway, resp.GetGateway())
	if gateway == "" {
		return fmt.Errorf("cluster %s announces no east-west gateway (controlplane --gateway): pass --gateway IP:PORT", f.cluster)
	}
	gwAddr, err := netip.ParseAddrPort(gateway)
	if err != nil {
		return fmt.Errorf("gateway %q: want IP:PORT, since the hosts file maps a name to an IP address", gateway)
	}

	if err := writeVMBootstrap(f.outDir, f.cluster, ns, name, f.internalIP, gwAddr, wg, resp); err != nil {
		return err
	}
	expires := time.Unix(resp.GetExpires(), 0).UTC()
	fmt.Fprintf(stdout, "Wrote the bootstrap files of WorkloadGroup %s/%s in cluster %s to %s.\n", ns, name, f.cluster, f.outDir)
	fmt.Fprintf(stdout, "The token in %s is good for one VM until %s.\n", agent.TokenFile, expires.Format(time.RFC3339))
	fmt.Fprintf(stdout, "On the VM, with the federate-agent package installed:\n  sudo install -m 0640 -g federate-agent %s/* /etc/federate/\n  sudo systemctl enable --now federate-agent\n", f.outDir)
	fmt.Fprintf(stdout, "To call federated services, write /etc/federate/%s: an Istio Sidecar with one egress listener\n"+
		"(bind: 127.0.0.1, captureMode: NONE) per service (docs/vms.md).\n", agent.SidecarFile)
	return nil
}

// writeVMBootstrap writes the files a VM of group wg needs, from what its
// control plane answered.
func writeVMBootstrap(outDir, cluster, ns, name, internalIP string, gwAddr netip.AddrPort, wg *networkingpb.WorkloadGroup, resp *agentpb.CreateBootstrapResponse) error {
	cpID, err := spiffeid.FromString(resp.GetControlPlaneId())
	if err != nil {
		return fmt.Errorf("control plane of %s: its SPIFFE ID %q: %v", cluster, resp.GetControlPlaneId(), err)
	}
	labels := agent.GroupLabels(wg)
	return agent.WriteBootstrap(outDir, agent.BootstrapConfig{
		Mesh: resp.GetMesh(), Cluster: cluster, Network: cmp.Or(wg.GetTemplate().GetNetwork(), resp.GetNetwork()),
		Namespace: ns, Group: name, ServiceAccount: wg.GetTemplate().GetServiceAccount(), TrustDomain: resp.GetTrustDomain(),
		Labels: labels, Ports: wg.GetTemplate().GetPorts(), Address: internalIP,
		Gateway: gwAddr, ControlPlaneID: cpID, Probe: wg.GetProbe(), Roots: resp.GetRootCerts(), Token: resp.GetToken(),
	})
}

// readWorkloadGroup reads a WorkloadGroup document and returns its
// namespace, name and spec as JSON.
func readWorkloadGroup(path string) (ns, name string, spec []byte, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", nil, fmt.Errorf("-f: %w", err)
	}
	obj, err := file.DecodeObject(data)
	if err != nil {
		return "", "", nil, fmt.Errorf("%s: %w", path, err)
	}
	if obj == nil {
		return "", "", nil, fmt.Errorf("%s: want one WorkloadGroup document", path)
	}
	if obj.Kind != "WorkloadGroup" || !strings.HasPrefix(obj.APIVersion, "networking.istio.io/") {
		return "", "", nil, fmt.Errorf("%s: kind %q, apiVersion %q: want a networking.istio.io WorkloadGroup", path, obj.Kind, obj.APIVersion)
	}
	if obj.Metadata.Name == "" {
		return "", "", nil, fmt.Errorf("%s: metadata.name is missing", path)
	}
	if !obj.HasSpec() {
		return "", "", nil, fmt.Errorf("%s: spec is missing: it holds the template with the serviceAccount", path)
	}
	return obj.Metadata.Namespace, obj.Metadata.Name, obj.Spec, nil
}
