package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// BenchmarkBundlePropagation measures how long a new root takes to reach
// every other member: 10 clusters, each in turn adds a root (the first step
// of a rotation, asked for by the admin over the member's RotateRoot API),
// and the time until every other member's bundle set and the hub's hold
// the new sequence is recorded.
func BenchmarkBundlePropagation(b *testing.B) {
	const clusters = 10
	// Nobody turns stale while the machine is busy with the load.
	timers := gossip.Timers{StaleAfter: time.Minute, DeadAfter: 2 * time.Minute, ExpireAfter: time.Hour}
	for range b.N {
		tm := fedtest.NewMesh(b, timers)
		var members []*fedtest.Member
		for i := range clusters {
			m := tm.AddCluster(fmt.Sprintf("c%02d", i))
			m.Update(b, fedtest.CoffeeService(m.Name, "order", 1, 8080))
			members = append(members, m)
		}
		fedtest.Eventually(b, time.Minute, "every slice everywhere, every member synced with the hub", func() bool {
			for _, owner := range members {
				if !hubConnected(b, owner.Member) {
					return false
				}
				want := owner.Member.Version(owner.Name)
				if registry.Compare(tm.Hub.SliceVersion(owner.Name), want) != 0 {
					return false
				}
				for _, m := range members {
					if registry.Compare(m.Member.Version(owner.Name), want) != 0 {
						return false
					}
				}
			}
			return true
		})
		// One admin connection per member, connected before the clock runs.
		rotators := make([]hubpb.ControlPlaneClient, len(members))
		for i, m := range members {
			conn := adminConnTo(b, tm, m.Member.Addr())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			rotators[i] = hubpb.NewControlPlaneClient(conn)
		}
		waitCPUQuiet(b, time.Minute)

		var lags []time.Duration
		b.ResetTimer()
		for i, owner := range members {
			td := owner.Member.Authority().TrustDomain()
			want := owner.Member.Authority().Status().Sequence + 1
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			stream, err := rotators[i].RotateRoot(ctx, &hubpb.RotateRootRequest{})
			if err == nil {
				// The first progress report comes once the new root is published.
				_, err = stream.Recv()
			}
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			pollFast(b, 10*time.Second, "new root everywhere", func() bool {
				for _, m := range members {
					if seq, _ := m.Member.Bundles().Sequence(td); seq < want {
						return false
					}
				}
				seq, _ := tm.Hub.Bundles().Sequence(td)
				return seq >= want
			})
			lags = append(lags, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
		b.Logf("bundle propagation to %d members and the hub, %d rotations: %v", clusters-1, len(lags), lags)
		for _, m := range members {
			tm.StopMember(m.Name)
		}
		tm.StopHub()
	}
}

// hubConnected reports whether a member's stream from the hub is open and
// synced, as its federate_hub_connected metric says.
func hubConnected(tb testing.TB, m *member.Member) bool {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "federate_hub_connected" {
			return len(f.GetMetric()) == 1 && f.GetMetric()[0].GetGauge().GetValue() == 1
		}
	}
	return false
}

// adminConnTo connects to a member's API with the hub's admin credential.
func adminConnTo(tb testing.TB, tm *fedtest.Mesh, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := membership.Dial(addr, filepath.Join(tm.Dir, "hub", hub.AdminCredFile), filepath.Join(tm.Dir, "hub", membership.CAFile))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// pollFast polls cond every 2ms, so that durations measured around it are
// accurate to a few milliseconds.
func pollFast(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// waitCPUQuiet waits until the process used less than a tenth of a CPU
// over half a second, so that leftovers of the setup (peer fetches,
// collections of its garbage) do not land in the measurement.
func waitCPUQuiet(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	const window = 500 * time.Millisecond
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			tb.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(window)
	defer tick.Stop()
	last := cpu()
	for {
		select {
		case <-deadline.C:
			tb.Fatalf("the process did not quiet down within %s", timeout)
		case <-tick.C:
		}
		now := cpu()
		if now-last < window/10 {
			return
		}
		last = now
	}
}
