package lab

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"google.golang.org/grpc"
)

const (
	etcdWritesResumeWithin = 5 * time.Second
	etcdMemberBackWithin   = 30 * time.Second
	etcdFrozenFor          = 10 * time.Second
	// A replica stops calling a member that missed two status checks in
	// a row, about 3.5 s after it froze, or sooner once a call to it timed
	// out (hub/etcdhealth.go).
	etcdFrozenNoticedWithin = 5 * time.Second
	// hubWriteTimeout bounds one probe write beyond the hub's own bound
	// (5 s for each etcd call; a token creation makes two).
	hubWriteTimeout = 12 * time.Second
)

// etcdLeaderKilled: the etcd leader dies (SIGKILL); every hub replica
// takes writes (a token creation) again within 5 s. The member is then
// started again on its data and rejoins.
func (v *verifier) etcdLeaderKilled(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "the etcd leader is killed", Expected: fmt.Sprintf("every hub replica takes writes again within %s; the member rejoins when restarted", etcdWritesResumeWithin)}
	cli, err := v.st.etcdClient()
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	defer cli.Close()
	leader, err := v.st.etcdLeader(ctx, cli)
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	if n, failed, _ := v.writeOnEveryReplica(ctx, 0, 0); failed > 0 {
		r.Happened = fmt.Sprintf("%d of %d hub writes failed before the leader was killed", failed, n)
		return r
	}
	killed := time.Now() // the signal, not the exit, which is polled for
	if err := v.st.killEtcdMember(leader); err != nil {
		r.Happened = err.Error()
		return r
	}
	resumed, requests, failed := v.writesResume(ctx, killed)
	r.Requests, r.Failed = requests, failed
	slowest := time.Duration(0)
	for _, d := range resumed {
		slowest = max(slowest, d)
	}
	r.Took = slowest
	newLeader := "none"
	if i, err := v.st.etcdLeader(ctx, cli); err == nil {
		newLeader = v.st.Etcd[i].Name
	}
	v.etcdRestarted = v.st.Etcd[leader].Name
	r.Happened = fmt.Sprintf("%s (the leader) killed; %s leads; writes resumed on the replicas after %s", v.st.Etcd[leader].Name, newLeader, durations(resumed))
	restarted := time.Now()
	if err := v.st.StartEtcdMember(leader); err != nil {
		r.Happened += "; restart: " + err.Error()
		return r
	}
	back := v.until(ctx, etcdMemberBackWithin, func() bool { return v.st.etcdHealthy(ctx, cli, leader) })
	if !back {
		r.Happened += fmt.Sprintf("; restarted, %s is not healthy after %s", v.st.Etcd[leader].Name, etcdMemberBackWithin)
		return r
	}
	r.Happened += fmt.Sprintf("; restarted, it rejoined after %s", time.Since(restarted).Round(time.Millisecond))
	r.OK = len(resumed) == len(v.st.Hubs) && slowest <= etcdWritesResumeWithin
	return r
}

// writesResume tries a write on every replica, again and again, until each
// succeeds, and returns how long after since each first did.
func (v *verifier) writesResume(ctx context.Context, since time.Time) (resumed []time.Duration, requests, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range v.st.Hubs {
		wg.Go(func() {
			conn, err := v.st.dialReplica(i)
			if err != nil {
				return
			}
			defer conn.Close()
			v.until(ctx, 3*etcdWritesResumeWithin, func() bool {
				err := writeOn(ctx, conn, time.Second)
				mu.Lock()
				defer mu.Unlock()
				requests++
				if err != nil {
					failed++
					return false
				}
				resumed = append(resumed, time.Since(since))
				return true
			})
		})
	}
	wg.Wait()
	return resumed, requests, failed
}

// etcdMemberFrozen: a follower is frozen (SIGSTOP) for 10 s, keeping its
// sockets, while every replica takes a write every 250 ms. Writes keep
// working: through every replica they succeed in every second of the
// freeze, and once the replicas left the frozen member (5 s) none fails;
// before that, a call their etcd client sent to it is made again on
// another member after 1 s, and only one that found no other in time
// fails (counted). Resumed, the member is healthy and every write
// succeeds. The frozen member is not the one the last step
// restarted, so that the replicas certainly use it.
func (v *verifier) etcdMemberFrozen(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "an etcd member is frozen", Expected: fmt.Sprintf("with a follower stopped (SIGSTOP) for %s, writes through every replica succeed in every second of it, "+
		"and none begun after %s fails (before, those sent to it are made again on another member); resumed, it is healthy and every write succeeds", etcdFrozenFor, etcdFrozenNoticedWithin)}
	cli, err := v.st.etcdClient()
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	defer cli.Close()
	leader, err := v.st.etcdLeader(ctx, cli)
	if err != nil {
		r.Happened = err.Error()
		return r
	}
	frozen := -1
	for i, m := range v.st.Etcd {
		if i != leader && (frozen < 0 || m.Name != v.etcdRestarted) {
			frozen = i
		}
	}
	pid := v.st.Etcd[frozen].PID
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		r.Happened = fmt.Sprintf("freeze %s (pid %d): %v", v.st.Etcd[frozen].Name, pid, err)
		return r
	}
	start := time.Now()
	ws := v.scheduledWrites(ctx, etcdFrozenFor, 250*time.Millisecond, func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	resumed := time.Now()
	healthy := v.until(ctx, etcdMemberBackWithin, func() bool { return v.st.etcdHealthy(ctx, cli, frozen) })
	healedAfter := time.Since(resumed)
	n, failedAfter, _ := v.writeOnEveryReplica(ctx, 0, 0)
	r.Took, r.Requests = time.Since(start), len(ws)
	gaps, late := 0, 0
	for _, w := range ws {
		if w.err != nil {
			r.Failed++
			if w.at >= etcdFrozenNoticedWithin {
				late++
			}
		}
	}
	for i := range v.st.Hubs {
		gaps += secondsWithoutSuccess(ws, i, etcdFrozenFor)
	}
	r.Happened = fmt.Sprintf("%s (a follower) frozen for %s: %d writes on %d replicas, %d failed, %d of them begun after %s (%s); seconds without a successful write on a replica: %d",
		v.st.Etcd[frozen].Name, etcdFrozenFor, len(ws), len(v.st.Hubs), r.Failed, late, etcdFrozenNoticedWithin, describeWrites(ws), gaps)
	if !healthy {
		r.Happened += fmt.Sprintf("; resumed, not healthy after %s", etcdMemberBackWithin)
		return r
	}
	r.Happened += fmt.Sprintf("; resumed, healthy after %s, %d of %d writes then failed", healedAfter.Round(time.Millisecond), failedAfter, n)
	r.OK = gaps == 0 && late == 0 && failedAfter == 0
	return r
}

// write is one probe write of scheduledWrites.
type write struct {
	replica int
	at      time.Duration // after the schedule began
	took    time.Duration
	err     error
}

// scheduledWrites starts a write on every replica every interval for d,
// each on its own, not waiting for the ones before; at d it calls then,
// and returns once every write ended.
func (v *verifier) scheduledWrites(ctx context.Context, d, interval time.Duration, then func()) []write {
	conns := make([]*grpc.ClientConn, len(v.st.Hubs))
	for i := range v.st.Hubs {
		conn, err := v.st.dialReplica(i)
		if err != nil {
			then()
			return []write{{replica: i, err: err}}
		}
		defer conn.Close()
		conns[i] = conn
	}
	var mu sync.Mutex
	var ws []write
	var wg sync.WaitGroup
	begin := time.Now()
	tick := time.NewTicker(interval)
	for time.Since(begin) < d && ctx.Err() == nil {
		for i, conn := range conns {
			wg.Go(func() {
				start := time.Now()
				err := writeOn(ctx, conn, hubWriteTimeout)
				mu.Lock()
				ws = append(ws, write{replica: i, at: start.Sub(begin), took: time.Since(start), err: err})
				mu.Unlock()
			})
		}
		<-tick.C
	}
	tick.Stop()
	then()
	wg.Wait()
	return ws
}

// secondsWithoutSuccess counts the whole seconds of d in which no write
// begun on replica succeeded.
func secondsWithoutSuccess(ws []write, replica int, d time.Duration) int {
	ok := map[int]bool{}
	for _, w := range ws {
		if w.replica == replica && w.err == nil {
			ok[int(w.at/time.Second)] = true
		}
	}
	n := 0
	for s := range int(d / time.Second) {
		if !ok[s] {
			n++
		}
	}
	return n
}

// describeWrites says how long the successful and the failed writes took.
func describeWrites(ws []write) string {
	var okMax, failMin, failMax time.Duration
	for _, w := range ws {
		switch {
		case w.err == nil:
			okMax = max(okMax, w.took)
		case failMin == 0 || w.took < failMin:
			failMin, failMax = w.took, max(failMax, w.took)
		default:
			failMax = max(failMax, w.took)
		}
	}
	s := fmt.Sprintf("successful ones took up to %s", okMax.Round(time.Millisecond))
	if failMax > 0 {
		s += fmt.Sprintf(", failed ones %s to %s", failMin.Round(time.Millisecond), failMax.Round(time.Millisecond))
	}
	return s
}

// writeOnEveryReplica writes on every replica at once, each every pause
// for d (at least once), and returns how many writes were made, how many
// failed and how long the slowest took.
func (v *verifier) writeOnEveryReplica(ctx context.Context, d, pause time.Duration) (requests, failed int, slowest time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := range v.st.Hubs {
		wg.Go(func() {
			conn, err := v.st.dialReplica(i)
			if err != nil {
				mu.Lock()
				requests, failed = requests+1, failed+1
				mu.Unlock()
				return
			}
			defer conn.Close()
			for {
				start := time.Now()
				err := writeOn(ctx, conn, hubWriteTimeout)
				mu.Lock()
				requests++
				slowest = max(slowest, time.Since(start))
				if err != nil {
					failed++
				}
				mu.Unlock()
				if time.Now().After(end) || ctx.Err() != nil {
					return
				}
				time.Sleep(pause)
			}
		})
	}
	wg.Wait()
	return requests, failed, slowest
}

// writeOn makes one write through a hub replica: a join token, which the
// replica stores in etcd before it answers.
func writeOn(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := hubpb.NewHubClient(conn).CreateToken(wctx, &hubpb.CreateTokenRequest{Cluster: "ha-probe", TtlSeconds: 60})
	return err
}

func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "never"
	}
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += d.Round(time.Millisecond).String()
	}
	return s
}
