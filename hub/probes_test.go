package hub_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/probe"
	"github.com/federate/federate/trust"
)

// The hub's gRPC health service answers a kubelet-like caller (plaintext,
// no certificate) on the health port, SERVING once the hub is ready; the
// mTLS API port keeps its rules: a caller without a certificate gets no
// health service and no API there, and a plaintext caller nothing at all.
func TestHubHealthIsOnTheProbePortOnly(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.AddCluster("east").Update(t, fedtest.CoffeeService("east", "orders", 2, 8080))
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	if err := tm.Hub.Live(); err != nil {
		t.Errorf("Live of a running hub: %v", err)
	}
	srv, err := probe.New(probe.Config{Listen: "127.0.0.1:0", Live: tm.Hub.Live, Ready: tm.Hub.Readiness})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(pctx) }()
	defer func() { stop(); <-done }()

	probeConn := fedtest.DialWith(t, srv.Addr(), insecure.NewCredentials())
	fedtest.EventuallyNil(t, 10*time.Second, "the hub's health SERVING on the probe port", func() error {
		resp, err := healthpb.NewHealthClient(probeConn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return errStatus(resp.GetStatus())
		}
		return err
	})

	noCert := fedtest.DialWith(t, tm.HubAddr, credentials.NewTLS(trust.PinnedTLS(trust.Fingerprint(tm.HubCA(t)), "/hub", nil)))
	_, err = healthpb.NewHealthClient(noCert).Check(ctx, &healthpb.HealthCheckRequest{})
	fedtest.WantCode(t, err, "health on the hub's API port without a certificate", codes.Unimplemented)
	_, err = hubpb.NewRegistryClient(noCert).Status(ctx, &hubpb.StatusRequest{})
	fedtest.WantCode(t, err, "status on the hub's API port without a certificate", codes.Unauthenticated)

	plain := fedtest.DialWith(t, tm.HubAddr, insecure.NewCredentials())
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(plain).Check(short, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	fedtest.WantCode(t, err, "plaintext health on the hub's API port", codes.Unavailable, codes.DeadlineExceeded)
}

// A hub that has not started is not ready, and says so.
func TestHubNotReadyBeforeRun(t *testing.T) {
	t.Parallel()
	srv, err := hub.New(hub.Config{Mesh: "shop", Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Readiness(); err == nil {
		t.Error("a hub that has not run is ready")
	}
	if err := srv.Live(); err != nil {
		t.Errorf("a hub that has not run is not live: %v", err)
	}
}

type errStatus healthpb.HealthCheckResponse_ServingStatus

func (e errStatus) Error() string {
	return "status " + healthpb.HealthCheckResponse_ServingStatus(e).String()
}
