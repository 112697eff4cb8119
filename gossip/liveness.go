package gossip

import (
	"sync"
	"time"
)

// Cluster states, as shown by 'federate status'.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateStale   = "stale"
	StateDead    = "dead"
)

// Timers says when an unconfirmed cluster changes state. A cluster is
// confirmed each time it is heard from directly, over a gossip connection
// authenticated as that cluster; the timers count from the last time.
type Timers struct {
	// StaleAfter without confirmation marks the cluster's endpoints unhealthy.
	StaleAfter time.Duration
	// DeadAfter without confirmation declares the cluster dead.
	DeadAfter time.Duration
	// ExpireAfter without confirmation removes its slice.
	ExpireAfter time.Duration
}

// Default timers.
const (
	DefaultStaleAfter  = 30 * time.Second
	DefaultDeadAfter   = 2 * time.Minute
	DefaultExpireAfter = 24 * time.Hour
)

func (t Timers) withDefaults() Timers {
	if t.StaleAfter <= 0 {
		t.StaleAfter = DefaultStaleAfter
	}
	if t.DeadAfter < t.StaleAfter {
		t.DeadAfter = max(DefaultDeadAfter, t.StaleAfter)
	}
	if t.ExpireAfter < t.DeadAfter {
		t.ExpireAfter = max(DefaultExpireAfter, t.DeadAfter)
	}
	return t
}

// Unhealthy reports whether a state's endpoints must not receive traffic.
func Unhealthy(state string) bool { return state == StateStale || state == StateDead }

// Liveness tracks when each cluster was last confirmed by gossip.
type Liveness struct {
	timers Timers
	start  time.Time

	mu     sync.Mutex // guards the fields below
	last   map[string]time.Time
	gossip map[string]string // current gossip state: alive or suspect
}

func NewLiveness(t Timers, now time.Time) *Liveness {
	return &Liveness{timers: t.withDefaults(), start: now, last: make(map[string]time.Time), gossip: make(map[string]string)}
}

// Observe records the gossip view at now. A cluster is alive if any of
// its members is (a restarted member may still be listed under its old
// node name), and was confirmed when any of them was last heard from.
func (l *Liveness) Observe(members []MemberState, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.gossip)
	for _, m := range members {
		if m.Cluster == "" {
			continue
		}
		if l.gossip[m.Cluster] != StateAlive {
			l.gossip[m.Cluster] = m.State
		}
		if m.HeardAgo >= 0 {
			if at := now.Add(-m.HeardAgo); at.After(l.last[m.Cluster]) {
				l.last[m.Cluster] = at
			}
		}
	}
}

// state returns a cluster's state and when it was last confirmed. A cluster
// never confirmed since start counts from start, so a restarted member keeps
// serving what it knew.
func (l *Liveness) State(cluster string, now time.Time) (string, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.last[cluster]
	if !ok {
		last = l.start
	}
	if l.gossip[cluster] == "alive" {
		return StateAlive, last
	}
	switch idle := now.Sub(last); {
	case idle < l.timers.StaleAfter:
		return StateSuspect, last
	case idle < l.timers.DeadAfter:
		return StateStale, last
	default:
		return StateDead, last
	}
}

// Expired reports whether a cluster has been unconfirmed for ExpireAfter.
func (l *Liveness) Expired(cluster string, now time.Time) bool {
	_, last := l.State(cluster, now)
	return now.Sub(last) >= l.timers.ExpireAfter
}

func (l *Liveness) Forget(cluster string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.last, cluster)
}

// Timers returns the timers in force, defaults filled in.
func (l *Liveness) Timers() Timers { return l.timers }
