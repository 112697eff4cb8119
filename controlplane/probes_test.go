package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/trust"
)

// A control plane that knows nothing of the federation yet (new store,
// hub down, no peer) is live but not ready, and says why; it turns ready
// once the hub is back. Its API port offers no health service to a
// caller without a certificate: health lives on the probe port.
func TestControlPlaneReadinessWaitsForTheFederation(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("east")
	tm.StopHub()
	cp := tm.StartControlPlane("east", controlplane.Config{
		Source: fedtest.NewSource(fedtest.CoffeeService("east", "orders", 2, 8080)), Gateway: "192.0.2.10:15443",
	})
	fedtest.Eventually(t, 10*time.Second, "the services read", func() bool {
		err := cp.Readiness()
		return err != nil && strings.Contains(err.Error(), "no federation state")
	})
	if err := cp.Live(); err != nil {
		t.Errorf("Live with the hub down: %v", err)
	}
	if !cp.Leading() {
		t.Error("a control plane without leader election does not lead")
	}
	tm.StartHub()
	fedtest.EventuallyNil(t, 30*time.Second, "the control plane ready once the hub is back", cp.Readiness)

	ctx := fedtest.DeadlineContext(t, 20*time.Second)
	noCert := fedtest.DialWith(t, cp.Member().Addr(), credentials.NewTLS(trust.PinnedTLS(trust.Fingerprint(tm.HubCA(t)), "/cluster/east", nil)))
	_, err := healthpb.NewHealthClient(noCert).Check(ctx, &healthpb.HealthCheckRequest{})
	fedtest.WantCode(t, err, "health on the control plane's API port without a certificate", codes.Unimplemented, codes.Unavailable, codes.Unauthenticated)
}
