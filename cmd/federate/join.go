package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/membership"
)

func joinCommand() *cobra.Command {
	var token, dir string
	var kf kubeFlags
	var logs cli.LogFlags
	cmd := command("join --token TOKEN (--data-dir DIR | [--kubeconfig F] [--context C] [-n NS] | --in-cluster)",
		"admit this cluster to a federation with a one-time token",
		"Admits this cluster to the federation. It checks that the hub presents the CA\n"+
			"named in the token, sends a certificate request (the key never leaves this\n"+
			"machine) and writes the cluster credential, the mesh CA and the federation\n"+
			"settings into DIR, where 'federate controlplane --data-dir DIR' finds them.\n"+
			"Without --data-dir it keeps them in a Secret of the Kubernetes cluster that\n"+
			"--kubeconfig, $KUBECONFIG or ~/.kube/config (and --context) name, or with\n"+
			"--in-cluster the Pod's own.",
		func(c *cobra.Command) error { return runJoin(c, token, dir, &kf, &logs) })
	fs := cmd.Flags()
	fs.StringVar(&token, "token", "", "join token from 'federate token create'")
	fs.StringVar(&dir, "data-dir", "", "the control plane's data directory")
	kf.register(cmd, false)
	logs.Register(cmd)
	cmd.Example = "  # into the control plane's data directory\n" +
		"  federate join --token fedjoin1.... --data-dir /var/lib/federate\n\n" +
		"  # into a Secret of a Kubernetes cluster\n" +
		"  federate join --token fedjoin1.... --context east -n federate-system"
	return cmd
}

func runJoin(c *cobra.Command, token, dir string, kf *kubeFlags, logs *cli.LogFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	if err := cli.Required(c, "token"); err != nil {
		return err
	}
	if dir != "" && kf.explicit() {
		return cli.Usagef("give one of --data-dir, --kubeconfig/--context or --in-cluster: where to keep the membership")
	}
	log, err := logs.Logger(stderr)
	if err != nil {
		return err
	}
	cli.BridgeKlog(log)
	var kube *controlplane.Kube
	if dir == "" {
		if kube, err = kf.connect(); err != nil {
			return fmt.Errorf("%w (or keep the membership in a directory: --data-dir DIR)", err)
		}
	}
	tok, err := membership.ParseToken(token)
	if err != nil {
		return err
	}
	if dir != "" {
		// The hub spends the token on the first join: find out now, not
		// after, that the membership cannot be saved.
		if err := checkWritableDir(dir, 0o700); err != nil { // private, as the membership is
			return fmt.Errorf("--data-dir %s: %w; the token is not used yet: pick a directory this user may write", dir, err)
		}
	}
	fmt.Fprintf(stderr, "Joining cluster %q to the hub at %s...\n", tok.Cluster, tok.Hub)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ms, err := membership.Join(ctx, token)
	if err != nil {
		return err
	}
	if kube != nil {
		if err := kube.SaveMembership(ctx, ms); err != nil {
			return fmt.Errorf("%w; the token is used now: create a new one with 'federate token create' and join again", err)
		}
		fmt.Fprintf(stdout, "Cluster %q joined mesh %q as %s; credential in Secret %s, valid until %s.\n",
			ms.Cluster, ms.Mesh, ms.Credential.ID(), kube.Namespace+"/"+kube.Secret, ms.Credential.Expiry().UTC().Format(time.RFC3339))
		return nil
	}
	if err := ms.Save(dir); err != nil {
		return fmt.Errorf("save membership in %s: %w; the token is used now: create a new one with 'federate token create' and join again", dir, err)
	}
	fmt.Fprintf(stdout, "Cluster %q joined mesh %q as %s; credential in %s, valid until %s.\n",
		ms.Cluster, ms.Mesh, ms.Credential.ID(), filepath.Join(dir, membership.CredentialFile), ms.Credential.Expiry().UTC().Format(time.RFC3339))
	return nil
}

// checkWritableDir creates dir with perm if needed and checks that this
// user may create files in it.
func checkWritableDir(dir string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
