package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/federate/federate/controlplane"
)

// writeKubeconfig writes a kubeconfig with a context per cluster name,
// each at its own server, the current one first.
func writeKubeconfig(t *testing.T, names ...string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	for _, n := range names {
		cfg.Clusters[n] = &clientcmdapi.Cluster{Server: "https://" + n + ".example:6443"}
		cfg.AuthInfos[n] = &clientcmdapi.AuthInfo{Token: "token-" + n}
		cfg.Contexts[n] = &clientcmdapi.Context{Cluster: n, AuthInfo: n, Namespace: "ctx-ns"}
	}
	cfg.CurrentContext = names[0]
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// connectWith parses args as 'federate controlplane' flags and connects.
func connectWith(t *testing.T, args ...string) (*controlplane.Kube, error) {
	t.Helper()
	var kf kubeFlags
	cmd := &cobra.Command{Use: "controlplane"}
	kf.register(cmd, true)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return kf.connect()
}

// The kubeconfig flags are kubectl's: $KUBECONFIG when --kubeconfig is
// absent, --context picks a context, -n (or --kube-namespace) the
// namespace, whose default stays federate's own, not the context's.
func TestKubeconfigFlagsFollowKubectl(t *testing.T) {
	t.Setenv("KUBECONFIG", writeKubeconfig(t, "east", "west"))
	t.Setenv("HOME", t.TempDir())
	cases := []struct {
		args          []string
		host, ns, err string
	}{
		{nil, "https://east.example:6443", controlplane.DefaultKubeNamespace, ""},
		{[]string{"--context", "west"}, "https://west.example:6443", controlplane.DefaultKubeNamespace, ""},
		{[]string{"--context", "west", "-n", "shop"}, "https://west.example:6443", "shop", ""},
		{[]string{"--kube-namespace", "legacy"}, "https://east.example:6443", "legacy", ""},
		{[]string{"--kubeconfig", writeKubeconfig(t, "central")}, "https://central.example:6443", controlplane.DefaultKubeNamespace, ""},
		{[]string{"--context", "north"}, "", "", `context "north"`},
		{[]string{"-n", "a", "--kube-namespace", "b"}, "", "", "disagree"},
		{[]string{"--kubeconfig", filepath.Join(t.TempDir(), "missing")}, "", "", "--kubeconfig"},
	}
	for _, tc := range cases {
		kube, err := connectWith(t, tc.args...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if kube.Config.Host != tc.host || kube.Namespace != tc.ns || kube.Config.BearerToken == "" {
			t.Errorf("%v: host %s, namespace %s, want %s in %s", tc.args, kube.Config.Host, kube.Namespace, tc.host, tc.ns)
		}
	}
	// --context completes with $KUBECONFIG's contexts, or --kubeconfig's.
	if got := strings.Fields(runOK(t, "__complete", "join", "--context", "")); !contains(got, "east") || !contains(got, "west") {
		t.Errorf("completing --context: %v, want east and west", got)
	}
	if got := strings.Fields(runOK(t, "__complete", "controlplane", "--kubeconfig", writeKubeconfig(t, "central"), "--context", "")); !contains(got, "central") || contains(got, "east") {
		t.Errorf("completing --context after --kubeconfig: %v, want central alone", got)
	}
	// Without a kubeconfig anywhere, join asks for one or for --data-dir.
	t.Setenv("KUBECONFIG", "")
	if _, err := runErr(t, "join", "--token", "fedjoin1.x"); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("join without a kubeconfig: %v, want a pointer to --data-dir", err)
	}
	// With $KUBECONFIG, join keeps the membership in the cluster: it gets
	// as far as reading the token.
	t.Setenv("KUBECONFIG", writeKubeconfig(t, "east"))
	if _, err := runErr(t, "join", "--token", "fedjoin1.x"); err == nil || strings.Contains(err.Error(), "kubeconfig") {
		t.Errorf("join with $KUBECONFIG: %v, want the token refused", err)
	}
}
