package controlplane_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/membership"
)

// A membership Secret with a broken credential stops the control plane at
// start, naming the Secret and the way out.
func TestIntegrationBrokenMembershipSecret(t *testing.T) {
	t.Parallel()
	c := kubetest.Start(t, "broken")[0]
	c.EnsureNamespace(t, controlplane.DefaultKubeNamespace, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.Client.CoreV1().Secrets(controlplane.DefaultKubeNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: controlplane.DefaultMembershipSecret},
		Data: map[string][]byte{
			membership.MembershipFile: []byte(`{"mesh":"shop","cluster":"broken","hub":"127.0.0.1:1"}`),
			membership.CredentialFile: []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"),
			membership.CAFile:         []byte("junk"),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{
		Cluster: "broken", Network: "n", DataDir: t.TempDir(), Gateway: "192.0.2.1:15443",
		Kube: &controlplane.Kube{
			Config: c.Config, Client: c.Client, Namespace: controlplane.DefaultKubeNamespace,
			Secret: controlplane.DefaultMembershipSecret, GatewayService: controlplane.DefaultGatewayService,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cp.Run(ctx)
	if err == nil {
		t.Fatal("the control plane started with a broken credential")
	}
	for _, want := range []string{"membership Secret federate-system/federate-membership", "credential.pem", "federate join --token TOKEN --kubeconfig"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
