package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Timing of the frozen-hub step.
const (
	// hubFrozenBeforeChange outlasts memberlist's suspicion of the hub and
	// a 10 s dial to it: gossip that waited on the hub would have stalled.
	hubFrozenBeforeChange = 12 * time.Second
	frozenHubSpreadWithin = 5 * time.Second
	resumedHubSyncWithin  = 10 * time.Second
)

// specialsExport is a service central exports while the hub is frozen;
// like menu, its one endpoint (the %s) is an address where nothing listens.
const specialsExport = `---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: specials, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: specials, namespace: shop}
spec:
  hosts: [specials.shop.svc.cluster.local]
  ports: [{number: 8085, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %s, ports: {http: 8085}, serviceAccount: specials}]
`

// frozenHub: the hub is frozen (SIGSTOP), not killed, so it keeps its
// sockets and dials to it hang; a change in central still reaches every
// cluster by gossip. The hub is resumed whatever happens, then holds the
// change; the export is withdrawn again at the end.
func (v *verifier) frozenHub(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "the hub is frozen; central exports specials",
		Expected: fmt.Sprintf("after %s frozen, every cluster sees specials within %s by gossip; resumed, the hub holds it within %s",
			hubFrozenBeforeChange, frozenHubSpreadWithin, resumedHubSyncWithin)}
	central := v.st.cluster("central")
	if central == nil {
		r.Happened = "skipped: the lab has no central"
		return r
	}
	file := filepath.Join(central.ConfigDir, "specials.yaml")
	before := int32(-1) // what a status call that fails returns
	if !v.until(ctx, 5*time.Second, func() bool { before = v.servicesOf(ctx, "central", "central"); return before >= 0 }) {
		r.Happened = "central's control plane does not answer status"
		return r
	}
	pid := v.st.Hub.PID
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		r.Happened = fmt.Sprintf("freeze the hub (pid %d): %v", pid, err)
		return r
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer resume()
	defer os.Remove(file)

	select {
	case <-ctx.Done():
		r.Happened = ctx.Err().Error()
		return r
	case <-time.After(hubFrozenBeforeChange):
	}
	start := time.Now()
	if err := os.WriteFile(file, []byte(fmt.Sprintf(specialsExport, v.st.ip(firstWorkloadIP-2))), 0o644); err != nil {
		r.Happened = err.Error()
		return r
	}
	spread := v.until(ctx, frozenHubSpreadWithin, func() bool {
		for _, c := range v.st.Clusters {
			if v.servicesOf(ctx, c.Name, "central") != before+1 {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	if !spread {
		// Asked before the hub resumes: once it does, its stream brings
		// the change to whoever gossip did not.
		var missing []string
		for _, c := range v.st.Clusters {
			if n := v.servicesOf(ctx, c.Name, "central"); n != before+1 {
				missing = append(missing, fmt.Sprintf("%s sees %d of central's services, want %d", c.Name, n, before+1))
			}
		}
		resume()
		r.Took = took
		r.Happened = fmt.Sprintf("not everywhere after %s with the hub frozen: %s", frozenHubSpreadWithin, strings.Join(missing, "; "))
		return r
	}
	resume()
	synced := v.until(ctx, resumedHubSyncWithin, func() bool { return v.servicesOf(ctx, "", "central") == before+1 })
	r.Took, r.OK = took, synced
	r.Happened = fmt.Sprintf("seen by every cluster after %s with the hub frozen", took.Round(time.Millisecond))
	if !synced {
		r.Happened += fmt.Sprintf("; the resumed hub did not hold it within %s", resumedHubSyncWithin)
	}
	return r
}
