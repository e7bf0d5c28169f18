package broker

import (
	"sync/atomic"

	"github.com/conflux-mq/conflux/core/log/cq"
)

// Retention (--retention-bytes, --retention-age) deletes the oldest
// commit-log segments whatever still points into them, as RocketMQ and
// Kafka do: a full disk must be fixable by retention alone. What it takes
// from someone who still needed it is never silent: each pass counts the
// delayed messages (timers), open half messages, unacknowledged deliveries
// of subscriptions and unconsumed messages of consumer groups whose data
// is gone, logs them as a warning and adds them to
// conflux_retention_lost_total. A timer or half message whose data is gone
// can never be delivered; the scheduler drops it when it comes due.

// retentionStats are the running totals behind the retention metrics.
type retentionStats struct {
	passes       atomic.Uint64
	removedBytes atomic.Uint64
	lostTimers   atomic.Uint64
	lostHalves   atomic.Uint64
	lostSubs     atomic.Uint64 // unsettled subscription deliveries
	lostGroups   atomic.Uint64 // messages no consumer group had consumed
}

// retentionMark is where things stood when a pass began.
type retentionMark struct {
	start  uint64                // log offset of the first record
	queues map[cq.QueueID]uint64 // each queue's first retained offset
}

// markRetention records the state before segments go (BeforeRetention).
func (s *stateMachine) markRetention() {
	m := retentionMark{start: s.log.StartOffset(), queues: map[cq.QueueID]uint64{}}
	for _, q := range s.disp.Queues().Queues() {
		lo, _, _ := s.disp.Range(q.Topic, q.Queue)
		m.queues[q] = lo
	}
	s.retMark = m
}

// reportRetention counts what the pass removed (AfterRetention, once the
// queues are trimmed).
func (s *stateMachine) reportRetention() {
	before := s.retMark
	start := s.log.StartOffset()
	if start <= before.start {
		return
	}
	gone := map[cq.QueueID][2]uint64{} // queue → [old lo, new lo) removed
	for q, oldLo := range before.queues {
		lo, _, _ := s.disp.Range(q.Topic, q.Queue)
		if lo > oldLo {
			gone[q] = [2]uint64{oldLo, lo}
		}
	}
	var timers, halves, subs, groups uint64
	s.mu.RLock()
	removed := func(phys uint64) bool { return phys >= before.start && phys < start }
	for phys := range s.st.sched.timers {
		if removed(phys) {
			timers++
		}
	}
	for _, h := range s.st.sched.halves.All() {
		if removed(h.Phys) {
			halves++
		}
	}
	for _, sub := range s.st.Subs {
		r, ok := gone[cq.QueueID{Topic: sub.Topic, Queue: sub.Queue}]
		if !ok {
			continue
		}
		if from := max(r[0], sub.Floor); from < r[1] {
			subs += r[1] - from
			for _, off := range sub.Settled {
				if off >= from && off < r[1] {
					subs--
				}
			}
		}
	}
	for k, pos := range s.st.offsets {
		if r, ok := gone[cq.QueueID{Topic: k.topic, Queue: k.queue}]; ok && pos < r[1] {
			groups += r[1] - max(pos, r[0])
		}
	}
	s.mu.RUnlock()

	st := &s.retention
	st.passes.Add(1)
	st.removedBytes.Add(start - before.start)
	st.lostTimers.Add(timers)
	st.lostHalves.Add(halves)
	st.lostSubs.Add(subs)
	st.lostGroups.Add(groups)
	log := s.cfg.Logger.Info
	if timers+halves+subs+groups > 0 {
		log = s.cfg.Logger.Warn
	}
	log("retention removed old messages", "bytes", start-before.start, "log_start_offset", start,
		"lost_delayed_messages", timers, "lost_half_messages", halves,
		"lost_unacked_deliveries", subs, "lost_unconsumed_group_messages", groups,
		"settings", "--retention-bytes, --retention-age")
}
