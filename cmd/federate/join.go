package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/membership"
)

func runJoin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("join", "join --token TOKEN (--data-dir DIR | --kubeconfig F | --in-cluster)",
		"Admits this cluster to the federation. It checks that the hub presents the CA\n"+
			"named in the token, sends a certificate request (the key never leaves this\n"+
			"machine) and writes the cluster credential, the mesh CA and the federation\n"+
			"settings into DIR, where 'federate controlplane --data-dir DIR' finds them.", stdout)
	var token, dir string
	fs.StringVar(&token, "token", "", "join token from 'federate token create'")
	fs.StringVar(&dir, "data-dir", "", "the control plane's data directory")
	var kf kubeFlags
	kf.register(fs, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "token"); err != nil {
		return err
	}
	if (dir == "") == !kf.enabled() {
		return errors.New("give exactly one of --data-dir, --kubeconfig or --in-cluster: where to keep the membership")
	}
	var kube *controlplane.Kube
	if kf.enabled() {
		var err error
		if kube, err = kf.connect(); err != nil {
			return err
		}
	}
	tok, err := membership.ParseToken(token)
	if err != nil {
		return err
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
			return err
		}
		fmt.Fprintf(stdout, "Cluster %q joined mesh %q as %s; credential in Secret %s, valid until %s.\n",
			ms.Cluster, ms.Mesh, ms.Credential.ID(), kube.Namespace+"/"+kube.Secret, ms.Credential.Expiry().UTC().Format(time.RFC3339))
		return nil
	}
	if err := ms.Save(dir); err != nil {
		return fmt.Errorf("save membership in %s: %w", dir, err)
	}
	fmt.Fprintf(stdout, "Cluster %q joined mesh %q as %s; credential in %s, valid until %s.\n",
		ms.Cluster, ms.Mesh, ms.Credential.ID(), filepath.Join(dir, membership.CredentialFile), ms.Credential.Expiry().UTC().Format(time.RFC3339))
	return nil
}
