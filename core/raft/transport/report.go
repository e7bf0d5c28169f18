package transport

import "sync"

// reporter makes the Handler's ReportUnreachable and ReportSnapshot calls
// from one goroutine of its own. Send cannot make them: a Handler typically
// hands the report to the Raft loop, and Send runs on that loop, so the call
// could wait for its own caller. Writers do not make them either, so that a
// slow Handler never delays the bytes to a peer.
//
// Reports accumulate as counts, so memory is bounded by the number of peer
// ids however many messages are dropped: unreachable reports for one id
// merge into one call (Raft's reaction is the same), snapshot reports keep
// their number (Raft expects one per MsgSnap).
type reporter struct {
	h    Handler
	wake chan struct{} // capacity 1: "there is something to report"

	mu struct {
		sync.Mutex
		unreachable map[uint64]struct{}
		snaps       map[snapOutcome]int
	}
}

type snapOutcome struct {
	id     uint64
	failed bool
}

func newReporter(h Handler) *reporter {
	r := &reporter{h: h, wake: make(chan struct{}, 1)}
	r.mu.unreachable = make(map[uint64]struct{})
	r.mu.snaps = make(map[snapOutcome]int)
	return r
}

// lost records n dropped messages to id, of which snaps were MsgSnaps.
func (r *reporter) lost(id uint64, n, snaps int) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	r.mu.unreachable[id] = struct{}{}
	if snaps > 0 {
		r.mu.snaps[snapOutcome{id, true}] += snaps
	}
	r.mu.Unlock()
	r.signal()
}

// snapsSent records snaps MsgSnaps to id written and flushed.
func (r *reporter) snapsSent(id uint64, snaps int) {
	if snaps == 0 {
		return
	}
	r.mu.Lock()
	r.mu.snaps[snapOutcome{id, false}] += snaps
	r.mu.Unlock()
	r.signal()
}

func (r *reporter) signal() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is pending already and will see these reports
	}
}

// run delivers reports until done is closed; what is pending then is
// dropped (the Handler contract: nothing is reported after Close).
func (r *reporter) run(done <-chan struct{}) {
	for {
		select {
		case <-r.wake:
			r.flush()
		case <-done:
			return
		}
	}
}

func (r *reporter) flush() {
	r.mu.Lock()
	unreachable, snaps := r.mu.unreachable, r.mu.snaps
	r.mu.unreachable = make(map[uint64]struct{}, len(unreachable))
	r.mu.snaps = make(map[snapOutcome]int, len(snaps))
	r.mu.Unlock()
	for id := range unreachable {
		r.h.ReportUnreachable(id)
	}
	for s, n := range snaps {
		for range n {
			r.h.ReportSnapshot(s.id, s.failed)
		}
	}
}
