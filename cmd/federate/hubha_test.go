package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/trust"
)

// 'federate hub create-ca' writes the CA file replicas share, once; a hub
// on etcd without one, or without etcd's TLS files, says what to pass;
// 'hub admin-credential' issues an operator's credential from it.
func TestHubCreateCAAndEtcdFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh-ca.pem")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"hub", "create-ca", "--mesh", "shop", "--out", path}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "sha256:") {
		t.Errorf("create-ca printed %q, want the CA's fingerprint", out.String())
	}
	first, err := os.ReadFile(path)
	if err != nil || !bytes.Contains(first, []byte("PRIVATE KEY")) {
		t.Fatalf("CA file: %v, %q", err, first)
	}
	err = run(context.Background(), []string{"hub", "create-ca", "--mesh", "shop", "--out", path}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second create-ca: %v, want a refusal to overwrite", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
		t.Fatal("second create-ca changed the file")
	}
	ops := filepath.Join(dir, "ops")
	out.Reset()
	if err := run(context.Background(), []string{"hub", "admin-credential", "--mesh", "shop", "--ca-file", path, "--out", ops}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadCredential(filepath.Join(ops, hub.AdminCredFile)); err != nil || !strings.Contains(out.String(), "valid until") {
		t.Errorf("admin-credential printed %q; credential: %v", out.String(), err)
	}
	err = run(context.Background(), []string{"hub", "admin-credential", "--mesh", "shop", "--ca-file", path, "--out", ops, "--valid-for", "0s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--valid-for") {
		t.Errorf("admin-credential --valid-for 0s: %v, want a usage error", err)
	}
	for args, want := range map[string]string{
		"--store etcd --etcd-endpoints https://127.0.0.1:2379 --etcd-cert c --etcd-key k --etcd-ca a": "--ca-file",
		"--store etcd --ca-file " + path:                                              "--etcd-endpoints",
		"--store etcd --ca-file " + path + " --etcd-endpoints https://127.0.0.1:2379": "--etcd-cert, --etcd-key and --etcd-ca",
		"--store postgres": "unknown store",
	} {
		argv := append([]string{"hub", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "hub"), "--mesh", "shop"}, strings.Fields(args)...)
		err := run(context.Background(), argv, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("hub %s: %v, want an error naming %q", args, err, want)
		}
	}
}
