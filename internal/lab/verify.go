package lab

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// StepResult is one row of 'federate lab verify'.
type StepResult struct {
	Step     string        `json:"step"`
	Expected string        `json:"expected"`
	Happened string        `json:"happened"`
	Took     time.Duration `json:"took"`
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	OK       bool          `json:"ok"`
}

// Verify plays the coffee-shop scenario against a running lab, one step
// after another, and returns a row per step. It restarts what it stops, so
// the lab keeps running afterwards.
func Verify(ctx context.Context, st *State, progress io.Writer) ([]StepResult, error) {
	if st.Loopback == "" {
		return nil, fmt.Errorf("lab: the lab in %s was started by an older federate, which recorded no loopback range: start it again", st.Dir)
	}
	v := &verifier{st: st, progress: progress}
	order, err := st.find("east", "order-1")
	if err != nil {
		return nil, err
	}
	// The hub's outage: the one hub killed, restarted and frozen, or with
	// replicas, one of them killed and etcd's members killed and frozen.
	hubSteps := []func(context.Context, WorkloadState) StepResult{v.hubDown, v.hubBack, v.frozenHub} // verify_frozen.go
	if len(st.Hubs) > 0 {
		hubSteps = []func(context.Context, WorkloadState) StepResult{v.hubReplicaKilled, v.etcdLeaderKilled, v.etcdMemberFrozen} // verify_ha.go, verify_etcd.go
	}
	steps := []func(context.Context, WorkloadState) StepResult{v.isolation, v.localFirst, v.instancesFail, v.gatewayDies, v.failBack}
	steps = append(steps, hubSteps...)
	steps = append(steps, v.rotation, v.vmJoins, v.proxylessGRPC) // verify_grpc.go
	var results []StepResult
	for _, step := range steps {
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		r := step(ctx, order)
		took := r.Took.Round(time.Millisecond).String()
		if r.Requests > 0 {
			took += fmt.Sprintf(", %d of %d requests failed", r.Failed, r.Requests)
		}
		fmt.Fprintf(progress, "  %-4s %s: %s (%s)\n", mark(r.OK), r.Step, r.Happened, took)
		results = append(results, r)
	}
	return results, nil
}

func mark(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAIL"
}

// WriteTable prints the results as a table.
func WriteTable(w io.Writer, results []StepResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tEXPECTED\tHAPPENED\tTOOK\tFAILED\tRESULT")
	for _, r := range results {
		failed := "-" // a step that checks state rather than sending requests
		if r.Requests > 0 {
			failed = fmt.Sprintf("%d/%d", r.Failed, r.Requests)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Step, r.Expected, r.Happened, r.Took.Round(time.Millisecond), failed, mark(r.OK))
	}
	tw.Flush()
}

// Summary is the line under the table: how long the whole scenario took
// and how many requests failed in all.
func Summary(results []StepResult, took time.Duration) string {
	requests, failed, passed := 0, 0, 0
	for _, r := range results {
		requests += r.Requests
		failed += r.Failed
		if r.OK {
			passed++
		}
	}
	return fmt.Sprintf("Total: %s for %d steps (%d passed); %d of %d requests failed.",
		took.Round(time.Millisecond), len(results), passed, failed, requests)
}

type verifier struct {
	st       *State
	progress io.Writer
	failedTo string // the cluster payment failed over to
	// etcdRestarted names the etcd member the leader step restarted.
	etcdRestarted string
}

// load calls service through from's sidecar every interval until stopped,
// recording who answered.
type load struct {
	mu      sync.Mutex
	answers []answer
	stop    context.CancelFunc
	done    chan struct{}
}

type answer struct {
	began, at time.Time
	cluster   string
	err       error
}

const loadInterval = 20 * time.Millisecond

func startLoad(ctx context.Context, st *State, from WorkloadState, service string) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(loadInterval)
		defer tick.Stop()
		for {
			began := time.Now()
			r, err := st.Call(ctx, from, service)
			if ctx.Err() != nil {
				return
			}
			l.mu.Lock()
			l.answers = append(l.answers, answer{began: began, at: time.Now(), cluster: r.Cluster, err: err})
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

func (l *load) end() {
	l.stop()
	<-l.done
}

// since returns the answers after t.
func (l *load) since(t time.Time) []answer {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, _ := slices.BinarySearchFunc(l.answers, t, func(a answer, t time.Time) int { return a.at.Compare(t) })
	return slices.Clone(l.answers[i:])
}

// settled waits until the last n answers after t all satisfy ok, and
// returns when the first of them arrived.
func (l *load) settled(ctx context.Context, t time.Time, n int, timeout time.Duration, ok func(answer) bool) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		as := l.since(t)
		run := 0
		for i := len(as) - 1; i >= 0 && ok(as[i]); i-- {
			run++
			if run == n {
				return as[i].at, true
			}
		}
		time.Sleep(loadInterval)
	}
	return time.Time{}, false
}

func count(as []answer) (total, failed int, by map[string]int) {
	by = map[string]int{}
	for _, a := range as {
		if a.err != nil {
			failed++
			continue
		}
		by[a.cluster]++
	}
	return len(as), failed, by
}

// describe says which clusters served the answers, e.g. "8 served by
// central, 3 by west".
func describe(by map[string]int) string {
	var parts []string
	for i, c := range slices.Sorted(maps.Keys(by)) {
		if i == 0 {
			parts = append(parts, fmt.Sprintf("%d served by %s", by[c], c))
		} else {
			parts = append(parts, fmt.Sprintf("%d by %s", by[c], c))
		}
	}
	if len(parts) == 0 {
		return "no answer"
	}
	return strings.Join(parts, ", ")
}

// whyFailed names the first failed answers after start, with when each
// ended: "; failed at +312ms: <error>; ...", or "" when none failed.
func whyFailed(as []answer, start time.Time) string {
	var b strings.Builder
	n := 0
	for _, a := range as {
		if a.err == nil {
			continue
		}
		if n++; n > 3 {
			b.WriteString("; ...")
			break
		}
		fmt.Fprintf(&b, "; failed at %+dms: %v", a.at.Sub(start).Milliseconds(), a.err)
	}
	return b.String()
}

func from(c string) func(answer) bool {
	return func(a answer) bool { return a.err == nil && a.cluster == c }
}

func notFrom(c string) func(answer) bool {
	return func(a answer) bool { return a.err == nil && a.cluster != c }
}

// isolation: from east's network only other clusters' gateways (and the
// hub) can be reached, never a control plane or a workload directly.
func (v *verifier) isolation(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "networks are isolated", Expected: "from east, west's gateway answers; its control plane and workloads do not; 0 failed"}
	if !v.st.Isolate {
		r.Expected = "(with --isolate only)"
		r.Happened = "one shared network: not checked"
		r.OK = true
		return r
	}
	start := time.Now()
	west := v.st.cluster("west")
	dial := v.st.dialer("east")
	reach := func(addr string) bool {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := dial(dctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	gatewayIP, _, _ := net.SplitHostPort(west.Gateway.Addr)
	_, cpPort, _ := net.SplitHostPort(west.Addr)
	var direct []string
	direct = append(direct, net.JoinHostPort(gatewayIP, cpPort)) // the control plane's port on west's address
	for _, w := range v.st.Workloads {
		if w.Cluster == "west" {
			_, inboundPort, _ := net.SplitHostPort(w.Inbound)
			direct = append(direct, w.Inbound, net.JoinHostPort(gatewayIP, inboundPort))
		}
	}
	r.Requests = 1 + len(direct)
	if !reach(west.Gateway.Addr) {
		r.Failed++
	}
	var leaked []string
	for _, addr := range direct {
		if reach(addr) {
			leaked = append(leaked, addr)
		}
	}
	r.Took = time.Since(start)
	r.Happened = fmt.Sprintf("gateway %s reachable: %v; %d direct addresses refused", west.Gateway.Addr, r.Failed == 0, len(direct)-len(leaked))
	if len(leaked) > 0 {
		r.Happened += "; reachable: " + strings.Join(leaked, ", ")
	}
	r.OK = r.Failed == 0 && len(leaked) == 0
	return r
}

// localFirst: order in east calls payment, which east runs too.
func (v *verifier) localFirst(ctx context.Context, order WorkloadState) StepResult {
	r := StepResult{Step: "local-first routing", Expected: "order in east is served by payment in east; 0 failed"}
	l := startLoad(ctx, v.st, order, "payment")
	start := time.Now()
	time.Sleep(2 * time.Second)
	l.end()
	r.Took = time.Since(start)
	total, failed, by := count(l.since(start))
	r.Requests, r.Failed = total, failed
	r.Happened = describe(by) + whyFailed(l.since(start), start)
	r.OK = failed == 0 && by["east"] == total && total > 0
	return r
}

// instancesFail: east's payment instances stop; payment fails over.
func (v *verifier) instancesFail(ctx context.Context, order WorkloadState) StepResult {
	r := StepResult{Step: "payment in east stops", Expected: "calls fail over to us-west, per payment's DestinationRule; " +
		"none fails that began after the apps were gone (those in flight while they die may)"}
	l := startLoad(ctx, v.st, order, "payment")
	defer l.end()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	var apps []killed
	for _, w := range v.st.Workloads {
		if w.Cluster == "east" && w.Service == "payment" {
			apps = append(apps, killed{pid: w.AppPID, cluster: w.Cluster, addr: w.App})
		}
	}
	gone := v.kill(apps...)
	moved, ok := l.settled(ctx, start, 10, 15*time.Second, notFrom("east"))
	r.Took = time.Since(start)
	total, failed, by := count(l.since(start))
	r.Requests, r.Failed = total, failed
	if !ok {
		r.Happened = "still " + describe(by) + whyFailed(l.since(start), start)
		return r
	}
	last := l.since(moved)
	v.failedTo = last[len(last)-1].cluster
	r.Took = moved.Sub(start)
	r.Happened = fmt.Sprintf("apps gone after %s; moved to %s after %s; %s", gone.Sub(start).Round(time.Millisecond),
		v.failedTo, r.Took.Round(time.Millisecond), describe(by)) + whyFailed(l.since(start), start)
	r.OK = v.failedTo == "west" && by["central"] == 0 && failedAfter(l.since(start), gone) == 0
	return r
}

// killed is a process to kill and an address it listens on.
type killed struct {
	pid     int
	cluster string // whose network the address is in
	addr    string
}

// kill SIGKILLs the processes and returns once each is gone: it no longer
// runs and its listener refuses connections. A killed Go process's main
// thread is a zombie before its other threads have exited, and until the
// last one has, its sockets stay open: a listener still accepts
// connections, which fail once it closes.
func (v *verifier) kill(ps ...killed) time.Time {
	for _, p := range ps {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	running := func(p killed) bool {
		if alive(p.pid) {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		c, err := v.st.dialer(p.cluster)(ctx, "tcp", p.addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	for slices.ContainsFunc(ps, running) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return time.Now()
}

// failedAfter counts the failed answers to calls begun at t or later.
func failedAfter(as []answer, t time.Time) int {
	n := 0
	for _, a := range as {
		if a.err != nil && !a.began.Before(t) {
			n++
		}
	}
	return n
}

// gatewayDies: the gateway of the cluster now serving payment dies.
func (v *verifier) gatewayDies(ctx context.Context, order WorkloadState) StepResult {
	r := StepResult{Step: "west's gateway dies", Expected: "payment moves to central within 3 s; " +
		"none fails that began after the gateway was gone (those in flight through it may)"}
	c := v.st.cluster(v.failedTo)
	if c == nil {
		r.Happened = "skipped: payment did not fail over"
		return r
	}
	l := startLoad(ctx, v.st, order, "payment")
	defer l.end()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	gone := v.kill(killed{pid: c.Gateway.PID, cluster: c.Name, addr: c.Gateway.Addr})
	moved, ok := l.settled(ctx, start, 10, 15*time.Second, func(a answer) bool { return a.err == nil && a.cluster != c.Name && a.cluster != "east" })
	total, failed, by := count(l.since(start))
	r.Requests, r.Failed = total, failed
	r.Took = time.Since(start)
	if !ok {
		r.Happened = "still " + describe(by) + whyFailed(l.since(start), start)
		return r
	}
	r.Took = moved.Sub(start)
	r.Happened = fmt.Sprintf("%s's gateway killed, gone after %s; moved after %s; %s", c.Name, gone.Sub(start).Round(time.Millisecond),
		r.Took.Round(time.Millisecond), describe(by)) + whyFailed(l.since(start), start)
	r.OK = r.Took <= 3*time.Second && failedAfter(l.since(start), gone) == 0
	return r
}

// failBack restarts what the last steps stopped.
func (v *verifier) failBack(ctx context.Context, order WorkloadState) StepResult {
	r := StepResult{Step: "east's payment and the gateway return", Expected: "payment is served by east again within 20 s; 0 failed"}
	start := time.Now()
	if c := v.st.cluster(v.failedTo); c != nil && !alive(c.Gateway.PID) {
		if err := v.st.startGateway(c); err != nil {
			r.Happened = err.Error()
			return r
		}
	}
	for i := range v.st.Workloads {
		w := &v.st.Workloads[i]
		if w.Cluster == "east" && w.Service == "payment" && !alive(w.AppPID) {
			if err := v.st.startApp(w); err != nil {
				r.Happened = err.Error()
				return r
			}
		}
	}
	_ = v.st.save()
	l := startLoad(ctx, v.st, order, "payment")
	defer l.end()
	back, ok := l.settled(ctx, start, 10, 20*time.Second, from("east"))
	total, failed, by := count(l.since(start))
	r.Requests, r.Failed = total, failed
	r.Took = time.Since(start)
	if ok {
		r.Took = back.Sub(start)
	}
	r.Happened = describe(by) + whyFailed(l.since(start), start)
	if ok {
		r.Happened = fmt.Sprintf("back in east after %s; %s", r.Took.Round(time.Millisecond), r.Happened)
	}
	r.OK = ok && failed == 0
	return r
}

// menuExport is a service west exports while the hub is down. Nothing
// calls it: its one endpoint (the %s) is an address of the lab's /24
// where nothing listens.
const menuExport = `---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: menu, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: menu, namespace: shop}
spec:
  hosts: [menu.shop.svc.cluster.local]
  ports: [{number: 8084, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: menu}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: menu-1, namespace: shop}
spec: {address: %s, labels: {app: menu}, ports: {http: 8084}, serviceAccount: menu}
`

// hubDown: with the hub killed, a new export reaches every cluster.
func (v *verifier) hubDown(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "the hub is down; west exports menu", Expected: "every cluster sees menu within 10 s, by gossip"}
	west := v.st.cluster("west")
	if err := v.st.KillHub(); err != nil {
		r.Happened = err.Error()
		return r
	}
	before := v.servicesOf(ctx, "west", "west")
	start := time.Now()
	if err := os.WriteFile(filepath.Join(west.ConfigDir, "menu.yaml"), []byte(fmt.Sprintf(menuExport, v.st.ip(firstWorkloadIP-1))), 0o644); err != nil {
		r.Happened = err.Error()
		return r
	}
	ok := v.until(ctx, 10*time.Second, func() bool {
		for _, c := range v.st.Clusters {
			if v.servicesOf(ctx, c.Name, "west") != before+1 {
				return false
			}
		}
		return true
	})
	return r.finish(start, ok, "seen by east, west and central after %s", "not everywhere after 10 s")
}

// hubBack: the restarted hub resyncs from its file and the members.
func (v *verifier) hubBack(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "the hub comes back", Expected: "it holds every slice, menu included, within 10 s"}
	start := time.Now()
	if err := v.st.StartHub(v.st.Binary); err != nil {
		r.Happened = err.Error()
		return r
	}
	want := v.servicesOf(ctx, "west", "west")
	ok := v.until(ctx, 10*time.Second, func() bool { return v.servicesOf(ctx, "", "west") == want })
	return r.finish(start, ok, "resynced after %s", "not resynced after 10 s")
}

// finish records how a step that waited for a condition ended: done says
// after how long (a %s), failed what did not happen.
func (r StepResult) finish(start time.Time, ok bool, done, failed string) StepResult {
	r.Took, r.OK = time.Since(start), ok
	r.Happened = fmt.Sprintf(done, r.Took.Round(time.Millisecond))
	if !ok {
		r.Happened = failed
	}
	return r
}

// rotation: central's root rotates while order calls inventory there.
func (v *verifier) rotation(ctx context.Context, order WorkloadState) StepResult {
	r := StepResult{Step: "central's trust root rotates", Expected: "inventory in central serves every call; 0 failed"}
	l := startLoad(ctx, v.st, order, "inventory")
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	out, err := exec.CommandContext(ctx, v.st.Binary, "trust", "rotate", "--cluster", "central",
		"--hub", v.st.Hub.Addr, "--credential", v.st.Credential).CombinedOutput()
	time.Sleep(time.Second) // traffic after the switch
	l.end()
	r.Took = time.Since(start)
	total, failed, by := count(l.since(start))
	r.Requests, r.Failed = total, failed
	if err != nil {
		r.Happened = fmt.Sprintf("trust rotate: %v: %s", err, strings.TrimSpace(string(out)))
		return r
	}
	r.Happened = "switched to a new root; " + describe(by) + whyFailed(l.since(start), start)
	r.OK = failed == 0 && by["central"] == total
	return r
}

// vmJoins: a second barista VM joins west, and order in east, whose calls
// to barista central's barista-1 serves, reaches it too.
func (v *verifier) vmJoins(ctx context.Context, order WorkloadState) StepResult {
	r := StepResult{Step: "a VM joins west", Expected: "barista-2 in west serves order's calls within 10 s, as barista-1 in central does; 0 failed"}
	start := time.Now()
	w := WorkloadState{Name: "barista-2", Service: "barista", Cluster: "west", Outbound: map[string]string{},
		Address: v.st.ip(firstWorkloadIP + len(v.st.Workloads))}
	w.Inbound = v.st.freeAddr(w.Address)
	w.Dir = filepath.Join(v.st.Dir, "workloads", w.Cluster, w.Name)
	if _, err := v.st.find(w.Cluster, w.Name); err == nil {
		r.Happened = "barista-2 is already there: run verify on a fresh lab"
		return r
	}
	// West exports barista, whose endpoints are the VMs that register.
	se := coffeeShopService("barista")
	if err := os.WriteFile(filepath.Join(v.st.cluster("west").ConfigDir, "barista.yaml"), []byte(se), 0o644); err != nil {
		r.Happened = err.Error()
		return r
	}
	// Recorded before it starts, so that 'lab down' stops whatever of it
	// started even if the rest fails.
	v.st.Workloads = append(v.st.Workloads, w)
	err := v.st.startWorkload(ctx, &v.st.Workloads[len(v.st.Workloads)-1])
	_ = v.st.save()
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	l := startLoad(ctx, v.st, order, "barista")
	first, ok := l.settled(ctx, start, 1, 10*time.Second, from("west"))
	if ok {
		time.Sleep(500 * time.Millisecond) // calls after barista-2 joined
	}
	l.end()
	r.Took = time.Since(start)
	total, failed, by := count(l.since(start))
	r.Requests, r.Failed = total, failed
	r.Happened = describe(by) + whyFailed(l.since(start), start)
	if ok {
		r.Took = first.Sub(start)
		r.Happened = fmt.Sprintf("west serves after %s; %s", r.Took.Round(time.Millisecond), r.Happened)
	}
	r.OK = ok && failed == 0
	return r
}

func (v *verifier) servicesOf(ctx context.Context, viewer, cluster string) int32 {
	resp, err := v.st.Status(ctx, viewer)
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

func (v *verifier) until(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func (st *State) cluster(name string) *ClusterState {
	for i := range st.Clusters {
		if st.Clusters[i].Name == name {
			return &st.Clusters[i]
		}
	}
	return nil
}

func (st *State) find(cluster, name string) (WorkloadState, error) {
	for _, w := range st.Workloads {
		if w.Cluster == cluster && w.Name == name {
			return w, nil
		}
	}
	return WorkloadState{}, fmt.Errorf("lab: no workload %s in %s", name, cluster)
}
