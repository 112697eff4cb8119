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
	// hubWriteTimeout bounds one probe write; the hub's own bound on an
	// etcd call is 5 s.
	hubWriteTimeout = 6 * time.Second
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
	if err := v.st.killEtcdMember(leader); err != nil {
		r.Happened = err.Error()
		return r
	}
	killed := time.Now()
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
// sockets; every replica keeps taking writes meanwhile, and after SIGCONT
// the member is healthy again.
func (v *verifier) etcdMemberFrozen(ctx context.Context, _ WorkloadState) StepResult {
	r := StepResult{Step: "an etcd member is frozen", Expected: fmt.Sprintf("with a follower stopped (SIGSTOP) for %s, every hub write succeeds; resumed, it is healthy", etcdFrozenFor)}
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
	frozen := (leader + 1) % len(v.st.Etcd)
	pid := v.st.Etcd[frozen].PID
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		r.Happened = fmt.Sprintf("freeze %s (pid %d): %v", v.st.Etcd[frozen].Name, pid, err)
		return r
	}
	start := time.Now()
	requests, failed, slowest := v.writeOnEveryReplica(ctx, etcdFrozenFor, 250*time.Millisecond)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	resumed := time.Now()
	healthy := v.until(ctx, etcdMemberBackWithin, func() bool { return v.st.etcdHealthy(ctx, cli, frozen) })
	r.Took, r.Requests, r.Failed = time.Since(start), requests, failed
	r.Happened = fmt.Sprintf("%s (a follower) frozen for %s: %d writes on %d replicas, %d failed, the slowest took %s",
		v.st.Etcd[frozen].Name, etcdFrozenFor, requests, len(v.st.Hubs), failed, slowest.Round(time.Millisecond))
	if !healthy {
		r.Happened += fmt.Sprintf("; resumed, not healthy after %s", etcdMemberBackWithin)
		return r
	}
	r.Happened += fmt.Sprintf("; resumed, healthy after %s", time.Since(resumed).Round(time.Millisecond))
	r.OK = failed == 0
	return r
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
