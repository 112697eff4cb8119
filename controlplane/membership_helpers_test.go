package controlplane_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/membership"
)

// saveMembership stores the membership cluster holds in tm (joined already)
// as the membership Secret of namespace ns, as `federate join --kube` does,
// and returns it with a Kube that reads it with k's admin credentials.
func saveMembership(ctx context.Context, t *testing.T, tm *fedtest.Mesh, k *kubetest.Cluster, ns, cluster string) (*controlplane.Kube, *membership.Membership) {
	t.Helper()
	ms, err := membership.LoadMembership(filepath.Join(tm.Dir, cluster))
	if err != nil {
		t.Fatal(err)
	}
	kube := &controlplane.Kube{Config: k.Config, Client: k.Client, Namespace: ns, Secret: controlplane.DefaultMembershipSecret}
	if err := kube.SaveMembership(ctx, ms); err != nil {
		t.Fatal(err)
	}
	return kube, ms
}
