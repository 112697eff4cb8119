package member

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SignCertificate issues an X.509-SVID from this cluster's CA. The cluster's
// own credential and the admin may ask for any ID in the cluster's trust
// domain; a workload may ask only for IDs in its own namespace.
func (m *Member) SignCertificate(ctx context.Context, req *hubpb.SignCertificateRequest) (*hubpb.SignCertificateResponse, error) {
	caller, err := trust.PeerID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	want, err := spiffeid.FromString(req.GetSpiffeId())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "spiffe_id %q: %v", req.GetSpiffeId(), err)
	}
	own := m.authority.TrustDomain()
	if !want.MemberOf(own) {
		return nil, status.Errorf(codes.PermissionDenied, "%s is outside trust domain %s; this control plane issues only %s IDs", want, own, own)
	}
	switch {
	case caller == membership.ClusterID(m.td, m.cfg.Cluster) || caller == membership.AdminID(m.td):
	case caller.MemberOf(own):
		if ns := trust.NamespaceOf(caller); ns == "" || ns != trust.NamespaceOf(want) {
			m.log.Warn("refused a certificate request outside the caller's namespace", "caller", caller, "requested", want)
			return nil, status.Errorf(codes.PermissionDenied, "%s may request IDs only in namespace %q, not %s", caller, ns, want)
		}
	default:
		m.log.Warn("refused a certificate request", "caller", caller, "requested", want)
		return nil, status.Errorf(codes.PermissionDenied, "%s may not request certificates from %s", caller, own)
	}
	// Bound the seconds before converting: a Duration overflows past 292
	// years, and a huge TTL must be capped by the CA, not wrap around.
	ttl := time.Duration(min(req.GetTtlSeconds(), math.MaxInt64/int64(time.Second))) * time.Second
	chain, err := m.authority.IssueCSR(req.GetCsr(), want, ttl)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &hubpb.SignCertificateResponse{}
	for _, c := range chain {
		resp.Certificates = append(resp.Certificates, c.Raw)
	}
	return resp, nil
}

// RotateRoot starts a root rotation and reports its phases as they pass.
func (m *Member) RotateRoot(req *hubpb.RotateRootRequest, stream grpc.ServerStreamingServer[hubpb.RotateRootProgress]) error {
	caller, err := trust.PeerID(stream.Context())
	if err != nil || (caller != membership.AdminID(m.td) && caller != membership.ClusterID(m.td, m.cfg.Cluster)) {
		return status.Error(codes.PermissionDenied, "only the admin or this cluster's own credential may rotate its root")
	}
	if err := m.startRotation(stream.Context()); err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	send := func(msg string) error {
		st := m.authority.Status()
		return stream.Send(&hubpb.RotateRootProgress{Phase: st.Phase, BundleSequence: st.Sequence, Message: msg})
	}
	if err := send("new root added to the bundle; waiting until every live member has it"); err != nil {
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	phase := trust.PhaseAdded
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-tick.C:
		}
		st := m.authority.Status()
		if st.Phase == phase {
			continue
		}
		phase = st.Phase
		switch phase {
		case trust.PhaseSwitched:
			msg := fmt.Sprintf("every live member has the new root; it signs now; the old root is dropped after %s", m.authority.DropAfter().Sub(m.cfg.Now()).Round(time.Second))
			if err := send(msg); err != nil || !req.GetWait() {
				return err
			}
		case trust.PhaseStable:
			return send("old root dropped; rotation complete")
		}
	}
}
