package member_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/trust"
)

// A root rotated out is refused everywhere once it is dropped, even for an
// SVID minted after the rotation by someone who kept the old root's key
// (the reason to rotate): east's own API refuses it at the handshake, and
// west's workloads, which trust east through west's bundles, refuse it.
func TestTrustRotatedOutRootIsRefused(t *testing.T) {
	t.Parallel()
	const maxTTL = 2 * time.Second
	tm := newMesh(t, testTimers)
	ms := federate(t, tm, map[string]func(*member.Config){
		"east": func(c *member.Config) { c.MaxSVIDTTL = maxTTL },
	}, "east", "west")
	east, west := ms["east"], ms["west"]
	ctx := deadlineContext(t, 60*time.Second)

	// The old root, as a thief who copied east's state holds it.
	state, err := east.Member.Authority().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	old, err := trust.LoadAuthority(eastTD, state, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	old.SetMaxTTL(time.Hour) // the thief's copy has no limits
	oldRoots := old.Bundle().X509Authorities()
	csr, _ := newCSR(t)
	sign := func(cred *trust.Credential) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := controlPlaneAs(t, east, cred).SignCertificate(cctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: "spiffe://east.shop/ns/shop/sa/order"})
		return err
	}
	westServer := startWorkload(t, trust.MTLSServer(issueSVID(t, west.Member.Authority(), "spiffe://west.shop/ns/shop/sa/payment", time.Hour),
		west.Member.Bundles(), tlsconfig.AuthorizeMemberOf(eastTD), nil))
	callWest := func(cred *trust.Credential) error {
		_, err := handshake(ctx, westServer, trust.MTLSClient(cred, west.Member.Bundles(), tlsconfig.AuthorizeMemberOf(westTD), nil))
		return err
	}
	// Before the rotation the old root is the root: both accept it.
	before := issueSVID(t, old, "spiffe://east.shop/ns/shop/sa/order", time.Hour)
	if err := sign(before); err != nil {
		t.Fatalf("east's API before the rotation: %v", err)
	}
	if err := callWest(before); err != nil {
		t.Fatalf("west's workload before the rotation: %v", err)
	}

	stream, err := controlPlaneWithFiles(t, east.Member.Addr(), east.Dir).RotateRoot(ctx, &hubpb.RotateRootRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rotation: %v", err)
		}
		t.Logf("rotation: phase %s: %s", p.GetPhase(), p.GetMessage())
	}
	fedtest.Eventually(t, 10*time.Second, "west dropped east's old root", func() bool {
		view, err := west.Member.Bundles().GetBundleForTrustDomain(eastTD)
		return err == nil && !slices.ContainsFunc(oldRoots, view.HasX509Authority)
	})

	// A fresh SVID of the old root, valid for an hour.
	stolen := issueSVID(t, old, "spiffe://east.shop/ns/shop/sa/order", time.Hour)
	if time.Until(stolen.Leaf().NotAfter) < time.Minute {
		t.Fatalf("the stolen root issued an SVID valid until %s only; the test needs one that outlives the rotation", stolen.Leaf().NotAfter)
	}
	wantCode(t, sign(stolen), "east's API with an SVID of the dropped root", codes.Unavailable)
	if err := callWest(stolen); err == nil {
		t.Fatal("west's workload accepted an SVID of east's dropped root")
	} else {
		t.Logf("west's workload refused the dropped root: %v", err)
	}
	// East's current root works, so the refusals are about the root.
	current := func() *trust.Credential {
		return issueSVID(t, east.Member.Authority(), "spiffe://east.shop/ns/shop/sa/order", maxTTL)
	}
	if err := sign(current()); err != nil {
		t.Fatalf("east's API with an SVID of the current root: %v", err)
	}
	if err := callWest(current()); err != nil {
		t.Fatalf("west's workload with an SVID of east's current root: %v", err)
	}
}
