package lab

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"google.golang.org/grpc"
)

// The HA part of the scenario, on a lab started with --ha: a hub replica
// killed under a stream of changes, the etcd leader killed, an etcd
// member frozen (verify_etcd.go). Each restarts what it stopped.

const (
	haChanges         = 30                     // services exported in the stream
	haChangeEvery     = 100 * time.Millisecond // between two of them
	haKillAfter       = 10                     // changes made before the replica dies
	haFailoverWithin  = 2 * time.Second
	haNothingLostWait = 15 * time.Second
)

// haExport is one service of the stream: %[1]s its name, %[2]s the
// address of its one endpoint, where nothing listens.
const haExport = `---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: %[1]s, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: shop}
spec:
  hosts: [%[1]s.shop.svc.cluster.local]
  ports: [{number: 8090, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %[2]s, ports: {http: 8090}, serviceAccount: %[1]s}]
`

// hubReplicaKilled: the replica most members stream from is killed with
// SIGKILL while the clusters export a service every 100 ms. Every member
// is on another replica within 2 s, and every change reaches every
// cluster and every surviving replica.
func (v *verifier) hubReplicaKilled(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "a hub replica is killed under a stream of changes",
		Expected: fmt.Sprintf("every member on another replica within %s; all %d changes at every cluster and surviving replica", haFailoverWithin, haChanges)}
	on, err := v.membersReplicas(ctx)
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	victim := v.st.hubReplicaAt(busiest(on))
	if victim < 0 {
		r.Happened = fmt.Sprintf("the members stream from %v, none of the lab's replicas", on)
		return r
	}
	before := map[string]int32{}
	for _, c := range v.st.Clusters {
		before[c.Name] = v.servicesOf(ctx, c.Name, c.Name)
	}
	var files []string
	defer func() {
		for _, f := range files {
			os.Remove(f)
		}
	}()
	added := map[string]int32{}
	var killed time.Time
	var moved map[string]time.Duration
	var watch sync.WaitGroup
	defer watch.Wait()
	for i := range haChanges {
		if i == haKillAfter {
			killed = time.Now() // the signal, not the exit, which is polled for
			if err := v.st.killHubReplica(victim); err != nil {
				r.Happened = err.Error()
				return r
			}
			watch.Go(func() { moved = v.watchFailover(ctx, v.st.Hubs[victim].Address, killed) })
		}
		c := v.st.Clusters[i%len(v.st.Clusters)]
		f := filepath.Join(c.ConfigDir, fmt.Sprintf("ha-%02d.yaml", i))
		if err := os.WriteFile(f, fmt.Appendf(nil, haExport, fmt.Sprintf("ha-%02d", i), v.st.ip(firstWorkloadIP-3)), 0o644); err != nil {
			r.Happened = err.Error()
			return r
		}
		files = append(files, f)
		added[c.Name]++
		time.Sleep(haChangeEvery)
	}
	watch.Wait()
	lost := v.waitNothingLost(ctx, victim, before, added)
	r.Took = time.Since(killed)
	restartErr := v.restartHubReplica(ctx, victim)
	r.Happened, r.OK = describeFailover(victim, moved, len(v.st.Clusters), lost, r.Took)
	if restartErr != nil {
		r.Happened += "; restart: " + restartErr.Error()
		r.OK = false
	}
	return r
}

// describeFailover says how the replica's death went.
func describeFailover(victim int, moved map[string]time.Duration, clusters int, lost string, took time.Duration) (string, bool) {
	var parts []string
	slowest := time.Duration(0)
	for _, c := range slices.Sorted(maps.Keys(moved)) {
		parts = append(parts, fmt.Sprintf("%s %s", c, moved[c].Round(time.Millisecond)))
		slowest = max(slowest, moved[c])
	}
	s := fmt.Sprintf("replica %d killed after %d of %d changes; members on another replica after: %s", victim+1, haKillAfter, haChanges, strings.Join(parts, ", "))
	ok := len(moved) == clusters && slowest <= haFailoverWithin
	if len(moved) < clusters {
		s += fmt.Sprintf(" (%d of %d clusters moved within %s)", len(moved), clusters, haNothingLostWait)
	}
	if lost != "" {
		return s + "; " + lost, false
	}
	return s + fmt.Sprintf("; every change everywhere %s after the kill", took.Round(time.Millisecond)), ok
}

// membersReplicas returns, per cluster, the replica its control plane
// streams from, waiting until each streams from one.
func (v *verifier) membersReplicas(ctx context.Context) (map[string]string, error) {
	on := map[string]string{}
	ok := v.until(ctx, 10*time.Second, func() bool {
		for _, c := range v.st.Clusters {
			on[c.Name] = v.st.hubReplicaOf(ctx, c)
			if on[c.Name] == "" {
				return false
			}
		}
		return true
	})
	if !ok {
		return nil, fmt.Errorf("not every control plane streams from a hub replica: %v (federate_hub_replica)", on)
	}
	return on, nil
}

// busiest is the replica most clusters stream from.
func busiest(on map[string]string) string {
	n := map[string]int{}
	best := ""
	for _, addr := range on {
		n[addr]++
		if n[addr] > n[best] || n[addr] == n[best] && addr < best {
			best = addr
		}
	}
	return best
}

// watchFailover returns, per cluster, how long after killed its control
// plane streamed from a replica other than dead, for those that did
// within haNothingLostWait.
func (v *verifier) watchFailover(ctx context.Context, dead string, killed time.Time) map[string]time.Duration {
	moved := map[string]time.Duration{}
	v.until(ctx, haNothingLostWait, func() bool {
		for _, c := range v.st.Clusters {
			if _, done := moved[c.Name]; done {
				continue
			}
			if addr := v.st.hubReplicaOf(ctx, c); addr != "" && addr != dead {
				moved[c.Name] = time.Since(killed)
			}
		}
		return len(moved) == len(v.st.Clusters)
	})
	return moved
}

// waitNothingLost waits until every cluster and every replica but dead
// holds each cluster's services before[c]+added[c]; it returns what is
// missing, or "".
func (v *verifier) waitNothingLost(ctx context.Context, dead int, before, added map[string]int32) string {
	missing := ""
	check := func() bool {
		for _, viewer := range v.st.Clusters {
			for _, c := range v.st.Clusters {
				if n := v.servicesOf(ctx, viewer.Name, c.Name); n != before[c.Name]+added[c.Name] {
					missing = fmt.Sprintf("%s sees %d of %s's services, want %d", viewer.Name, n, c.Name, before[c.Name]+added[c.Name])
					return false
				}
			}
		}
		for i := range v.st.Hubs {
			if i == dead {
				continue
			}
			for _, c := range v.st.Clusters {
				if n := v.replicaServices(ctx, i, c.Name); n != before[c.Name]+added[c.Name] {
					missing = fmt.Sprintf("replica %d holds %d of %s's services, want %d", i+1, n, c.Name, before[c.Name]+added[c.Name])
					return false
				}
			}
		}
		return true
	}
	if v.until(ctx, haNothingLostWait, check) {
		return ""
	}
	return fmt.Sprintf("changes lost after %s: %s", haNothingLostWait, missing)
}

// replicaServices is how many of cluster's services replica i holds, or
// -1 if it does not answer.
func (v *verifier) replicaServices(ctx context.Context, i int, cluster string) int32 {
	conn, err := v.st.dialReplica(i)
	if err != nil {
		return -1
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := hubpb.NewRegistryClient(conn).Status(sctx, &hubpb.StatusRequest{})
	if err != nil {
		return -1
	}
	for _, c := range resp.GetClusters() {
		if c.GetName() == cluster {
			return c.GetServices()
		}
	}
	return -1
}

// restartHubReplica starts replica i again and waits until it serves.
func (v *verifier) restartHubReplica(ctx context.Context, i int) error {
	if err := v.st.StartHubReplica(i); err != nil {
		return err
	}
	return v.st.waitHubReplica(ctx, i)
}

// dialReplica opens an admin connection to replica i alone.
func (st *State) dialReplica(i int) (*grpc.ClientConn, error) {
	r := st.Hubs[i]
	return membership.Dial(r.Address, filepath.Join(r.DataDir, hub.AdminCredFile), filepath.Join(r.DataDir, membership.CAFile))
}

// hubReplicaSeries is a control plane's federate_hub_replica line.
var hubReplicaSeries = regexp.MustCompile(`(?m)^federate_hub_replica\{address="([^"]+)"\} 1$`)

// hubReplicaOf returns the hub replica c's control plane streams from, by
// its metrics, or "".
func (st *State) hubReplicaOf(ctx context.Context, c ClusterState) string {
	if c.Metrics == "" {
		return ""
	}
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(mctx, http.MethodGet, "http://"+c.Metrics+"/metrics", nil)
	resp, err := st.httpClient(c.Name).Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return ""
	}
	if m := hubReplicaSeries.FindSubmatch(body); m != nil {
		return string(m[1])
	}
	return ""
}
