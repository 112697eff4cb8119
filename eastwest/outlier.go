package eastwest

import (
	"sync"
	"time"
)

// maxTracked bounds the endpoints the detector remembers; past it, entries
// that are neither ejected nor recently failing are forgotten.
const maxTracked = 4096

// outliers ejects endpoints passively: one that failed to connect
// threshold times in a row is skipped for cooldown, then tried again with
// a clean slate.
type outliers struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time

	mu      sync.Mutex           // guards failing
	failing map[string]*failures // endpoints whose last attempt failed
}

type failures struct {
	consecutive  int
	last         time.Time
	ejectedUntil time.Time
}

func newOutliers(cfg OutlierConfig, now func() time.Time) *outliers {
	return &outliers{
		threshold: cfg.ConsecutiveFailures,
		cooldown:  cfg.EjectionTime,
		now:       now,
		failing:   make(map[string]*failures),
	}
}

// ejected reports whether addr is ejected now.
func (o *outliers) ejected(addr string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.failing[addr]
	return ok && o.now().Before(f.ejectedUntil)
}

// failed records a failed connect to addr and reports whether this failure
// ejected it.
func (o *outliers) failed(addr string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	f, ok := o.failing[addr]
	if !ok {
		if len(o.failing) >= maxTracked {
			o.forgetStaleLocked(now)
		}
		f = &failures{}
		o.failing[addr] = f
	}
	f.last = now
	if now.Before(f.ejectedUntil) {
		return false // tried while ejected because every endpoint was
	}
	f.consecutive++
	if f.consecutive < o.threshold {
		return false
	}
	f.consecutive = 0
	f.ejectedUntil = now.Add(o.cooldown)
	return true
}

// succeeded records a connect to addr: its failures are forgiven.
func (o *outliers) succeeded(addr string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.failing, addr)
}

func (o *outliers) forgetStaleLocked(now time.Time) {
	for addr, f := range o.failing {
		if !now.Before(f.ejectedUntil) && now.Sub(f.last) > o.cooldown {
			delete(o.failing, addr)
		}
	}
}
