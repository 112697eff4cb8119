package controlplane

import (
	"context"
	"crypto/x509"
	"fmt"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/federate/federate/controlplane/istiod"
	"github.com/federate/federate/member"
)

// runIstiod keeps, in the control plane's Kubernetes cluster, what an
// unmodified istiod needs to send its sidecars to the other clusters'
// gateways (see package istiod).
func (c *ControlPlane) runIstiod(ctx context.Context, m *member.Member) error {
	k := c.cfg.Kube
	ic, err := istioclient.NewForConfig(k.Config)
	if err != nil {
		return fmt.Errorf("controlplane: istio client: %w", err)
	}
	w, err := istiod.New(istiod.Config{Kube: k.Client, Istio: ic, Namespace: k.Namespace, Logger: c.log})
	if err != nil {
		return err
	}
	return w.Run(ctx, istiodView{m: m, self: c.cfg.Cluster})
}

// istiodView is the member's view of the other clusters for the writer.
type istiodView struct {
	m    *member.Member
	self string
}

func (v istiodView) Changed() <-chan struct{} { return v.m.Changed() }

func (v istiodView) Roots() []*x509.Certificate {
	return v.m.Authority().Bundle().X509Authorities()
}

func (v istiodView) Remotes() []istiod.Remote {
	var out []istiod.Remote
	for _, rc := range remoteClusters(v.m, v.self) {
		out = append(out, istiod.Remote{Cluster: rc.Name, Gateways: rc.Gateways, Services: rc.Services})
	}
	return out
}
