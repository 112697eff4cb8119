package eastwest

import "sync/atomic"

// maxIdleWorkers is how many workers wait for a task at most; the others
// end. Their stacks (about 8 KiB each) are what they keep.
const maxIdleWorkers = 8

// workers run a connection's tasks (reading its hello and connecting,
// relaying a direction) on goroutines that stay for the next task. A new
// goroutine starts with a 2 KiB stack, and the dial and the relay grow it
// twice, each time copying it: a profile put 7% of the gateway's CPU per
// connection there. A worker keeps its grown stack (the collector halves
// stacks that idle, at most once per cycle).
type workers struct {
	tasks chan func() // unbuffered: a send succeeds only to a waiting worker
	idle  atomic.Int32
}

func newWorkers() *workers { return &workers{tasks: make(chan func())} }

// run runs task on a waiting worker, or on a new one.
func (w *workers) run(task func()) {
	select {
	case w.tasks <- task:
	default:
		go w.work(task)
	}
}

func (w *workers) work(task func()) {
	for {
		task()
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		var ok bool
		task, ok = <-w.tasks
		w.idle.Add(-1)
		if !ok {
			return
		}
	}
}

// stop ends the waiting workers; run must not be called after.
func (w *workers) stop() { close(w.tasks) }
