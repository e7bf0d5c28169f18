package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/broker/command"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/txn"
)

// TxnCheck is a check-back the cluster decided to send: ask a producer of
// Group whether the transaction of the half message at Phys committed.
type TxnCheck = txn.Half

// maxPendingChecks bounds check-backs waiting for the checker; more are
// dropped (the next round asks again).
const maxPendingChecks = 1024

// scheduler is the leader's loop over the schedule.
type scheduler struct {
	stop    chan struct{}
	done    chan struct{}
	checker atomic.Pointer[func(TxnCheck)]
}

// SetTxnChecker installs the function that sends a check-back to a live
// producer of the group (the RocketMQ gateway). Every node calls it for
// every check-back the leader decided on; a node without a producer of
// the group does nothing. It must not block for long.
func (b *Broker) SetTxnChecker(f func(TxnCheck)) { b.sched.checker.Store(&f) }

// EndTransaction commits or rolls back the half message stored at phys.
// The first decision wins; a later one (a duplicate END_TRANSACTION, or
// the answer to a check-back racing with it) is accepted and changes
// nothing. A committed message is delivered by the leader shortly after.
func (b *Broker) EndTransaction(ctx context.Context, phys uint64, commit bool) error {
	op := command.SchedRollback
	if commit {
		op = command.SchedCommit
	}
	return b.command(ctx, &command.Command{Kind: command.KindSchedule, Scheds: []command.Sched{{Op: op, Phys: phys}}})
}

// HalfMessage returns an unfinished half message's state.
func (b *Broker) HalfMessage(phys uint64) (TxnCheck, bool) {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	return b.sm.st.sched.halves.Get(phys)
}

// PendingTimers is the number of scheduled messages not yet delivered.
func (b *Broker) PendingTimers() int {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	return len(b.sm.st.sched.timers)
}

// OpenTransactions is the number of half messages not finished (open, or
// committed and not yet delivered).
func (b *Broker) OpenTransactions() int {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	return b.sm.st.sched.halves.Len()
}

// scheduleRoute stores a delayed or half message in its system topic,
// with its real destination in properties. It returns false for a message
// due now.
func (b *Broker) scheduleRoute(ctx context.Context, m *Message, msg *batch.Message, topic string, queue int) (string, bool, error) {
	sys := TimerTopic
	var due int64
	switch {
	case m.Half:
		sys = HalfTopic
	case m.DeliverAt.IsZero():
		return "", false, nil
	default:
		d := time.Until(m.DeliverAt)
		if d <= 0 {
			return "", false, nil
		}
		if d > b.cfg.Schedule.MaxDelay {
			return "", false, fmt.Errorf("%w: %v > %v", ErrDelayTooLong, d.Round(time.Second), b.cfg.Schedule.MaxDelay)
		}
		due = m.DeliverAt.UnixMilli()
	}
	if len(m.Also) > 0 {
		return "", false, errors.New("broker: a delayed or half message has one destination")
	}
	if _, ok := b.Topic(sys); !ok {
		// Write-only: no consumer can read a system topic, even one that
		// asks for its route; the scheduler reads by physical offset.
		if err := b.CreateTopic(ctx, Topic{Name: sys, Queues: 1, Perm: PermWrite}); err != nil {
			return "", false, err
		}
	}
	msg.Properties = append(msg.Properties,
		batch.Property{Key: PropRealTopic, Value: topic},
		batch.Property{Key: PropRealQueue, Value: strconv.Itoa(queue)})
	if !m.Half {
		msg.Properties = append(msg.Properties, batch.Property{Key: PropTimerOutMs, Value: strconv.FormatInt(due, 10)})
	}
	return sys, true, nil
}

// stripInternal removes the properties only the broker may set, so that a
// producer cannot finish someone else's timer or transaction.
func stripInternal(ps []batch.Property) []batch.Property {
	if !slices.ContainsFunc(ps, func(p batch.Property) bool { return internalProperty(p.Key) }) {
		return ps
	}
	out := ps[:0:0]
	for _, p := range ps {
		if !internalProperty(p.Key) {
			out = append(out, p)
		}
	}
	return out
}

func internalProperty(k string) bool {
	return k == PropScheduledFrom || k == PropRealTopic || k == PropRealQueue || k == PropTimerOutMs
}

func (b *Broker) startScheduler() {
	b.sched.stop, b.sched.done = make(chan struct{}), make(chan struct{})
	go b.runChecks()
	go b.runScheduler()
}

func (b *Broker) stopScheduler() {
	close(b.sched.stop)
	<-b.sched.done
}

// runChecks hands applied check-backs to the checker.
func (b *Broker) runChecks() {
	for {
		select {
		case <-b.sched.stop:
			return
		case h := <-b.sm.checks:
			if f := b.sched.checker.Load(); f != nil {
				(*f)(h)
			}
		}
	}
}

// handOverChecks queues the check-backs of the last apply (raft loop).
func (s *stateMachine) handOverChecks() {
	s.mu.Lock()
	checks := s.st.sched.checks
	s.st.sched.checks = nil
	s.mu.Unlock()
	for _, h := range checks {
		select {
		case s.checks <- h:
		default:
		}
	}
}

// runScheduler is the leader's loop: deliver due timers and committed half
// messages, send check-backs, discard transactions checked too often.
func (b *Broker) runScheduler() {
	defer close(b.sched.done)
	t := time.NewTicker(b.cfg.Schedule.Tick)
	defer t.Stop()
	var term uint64
	ready, busy := false, false
	for {
		select {
		case <-b.sched.stop:
			return
		default:
		}
		if !busy {
			select {
			case <-b.sched.stop:
				return
			case <-t.C:
			}
		}
		busy = false
		st := b.node.Status()
		if st.Leader != b.cfg.NodeID || st.ID != b.cfg.NodeID {
			term, ready = 0, false
			continue
		}
		if st.Term != term {
			term, ready = st.Term, false
		}
		if !ready {
			ready = b.schedBarrier(term)
			if !ready {
				continue
			}
		}
		n, err := b.schedRound(term)
		if err != nil {
			// The outcome of a copy is unknown: start over from the
			// replicated state after the next barrier.
			b.cfg.Logger.Warn("scheduler round failed", "err", err)
			ready = false
			continue
		}
		busy = n >= b.cfg.Schedule.MaxDeliveriesPerTick
	}
}

// schedBarrier commits an empty schedule command in this term: once it is
// applied, so is every entry of earlier terms, and the schedule this node
// holds is the whole truth. The popped-timer heap is rebuilt from it.
func (b *Broker) schedBarrier(term uint64) bool {
	ctx, cancel := b.schedContext()
	defer cancel()
	if err := b.command(ctx, &command.Command{Kind: command.KindSchedule}); err != nil {
		return false
	}
	if b.node.Status().Term != term {
		return false
	}
	b.sm.mu.Lock()
	b.sm.st.sched.rebuildHeap()
	b.sm.mu.Unlock()
	return true
}

func (b *Broker) schedContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*b.cfg.ProposeTimeout)
	go func() {
		select {
		case <-b.sched.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// schedRound does one tick of work as leader of term and returns how many
// copies it made.
func (b *Broker) schedRound(term uint64) (int, error) {
	now := time.Now().UnixMilli()
	limit := b.cfg.Schedule.MaxDeliveriesPerTick
	b.sm.mu.Lock()
	due := b.sm.st.sched.popDue(now, limit)
	plan := b.sm.st.sched.halves.Scan(now, b.cfg.Schedule.Txn)
	b.sm.mu.Unlock()
	var copies []Message
	var drops []command.Sched
	for _, e := range due {
		m, err := b.scheduledCopy(e.Phys, false)
		if err != nil {
			b.cfg.Logger.Warn("dropping undeliverable timer", "phys", e.Phys, "err", err)
			drops = append(drops, command.Sched{Op: command.SchedDrop, Phys: e.Phys})
			continue
		}
		copies = append(copies, m)
	}
	for _, h := range plan.Deliver {
		if len(copies) >= limit {
			break
		}
		m, err := b.scheduledCopy(h.Phys, true)
		if err != nil {
			b.cfg.Logger.Warn("dropping undeliverable transaction", "phys", h.Phys, "err", err)
			drops = append(drops, command.Sched{Op: command.SchedDrop, Phys: h.Phys})
			continue
		}
		copies = append(copies, m)
	}
	ctx, cancel := b.schedContext()
	defer cancel()
	if len(copies) > 0 {
		if err := b.produceCopies(ctx, term, copies, &drops); err != nil {
			return 0, err
		}
	}
	ops := drops
	for _, h := range plan.Check {
		ops = append(ops, command.Sched{Op: command.SchedChecked, Phys: h.Phys, AtMs: now})
	}
	for _, h := range plan.Discard {
		b.cfg.Logger.Info("discarding a transaction checked too often", "phys", h.Phys, "group", h.Group, "checks", h.Checks)
		ops = append(ops, command.Sched{Op: command.SchedRollback, Phys: h.Phys})
	}
	if len(ops) > 0 {
		if err := b.command(ctx, &command.Command{Kind: command.KindSchedule, Scheds: ops}); err != nil {
			return 0, err
		}
	}
	return len(copies), nil
}

// produceCopies stores the copies; one that cannot be routed any more (its
// topic was deleted, say) is dropped instead of blocking the schedule.
func (b *Broker) produceCopies(ctx context.Context, term uint64, copies []Message, drops *[]command.Sched) error {
	_, err := b.produceInTerm(ctx, term, copies)
	if err == nil || !permanentProduceError(err) {
		return err
	}
	// Find the culprits one by one (rare).
	for _, c := range copies {
		if _, err := b.produceInTerm(ctx, term, []Message{c}); err != nil {
			if !permanentProduceError(err) {
				return err
			}
			b.cfg.Logger.Warn("dropping undeliverable scheduled message", "phys", c.scheduledFrom, "topic", c.Topic, "err", err)
			*drops = append(*drops, command.Sched{Op: command.SchedDrop, Phys: c.scheduledFrom})
		}
	}
	return nil
}

// permanentProduceError: Produce refused the messages before proposing
// anything (routing, limits, auto-creation), so nothing was stored.
func permanentProduceError(err error) bool {
	for _, p := range []error{ErrNoTopic, ErrNotWritable, ErrInvalidTopic, ErrBadQueue, ErrTooLarge, ErrBadQueueCount} {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}

// scheduledCopy builds the message that delivers the timer or half
// message stored at phys to its real topic and queue.
func (b *Broker) scheduledCopy(phys uint64, commit bool) (Message, error) {
	m, err := b.sm.disp.ReadMessage(phys)
	if err != nil {
		return Message{}, err
	}
	defer m.Release()
	return copyFromStored(m, phys, commit, b.Topic)
}

func copyFromStored(m clog.Message, phys uint64, commit bool, topic func(string) (Topic, bool)) (Message, error) {
	msg := batch.Message{
		ID: m.ID(), Flag: m.Flag(), SysFlag: m.SysFlag(), BornUnixMs: m.BornUnixMs(),
		ReconsumeTimes: m.ReconsumeTimes(), BornHost: string(m.BornHost()),
		Tags: string(m.Tags()), Body: bytes.Clone(m.Body()),
	}
	for k := range m.Keys {
		msg.Keys = append(msg.Keys, string(k))
	}
	real, queue := "", -1
	for k, v := range m.Properties {
		switch string(k) {
		case PropRealTopic:
			real = string(v)
			continue
		case PropRealQueue:
			if q, err := strconv.Atoi(string(v)); err == nil {
				queue = q
			}
			continue
		case PropTimerOutMs, PropDelay, PropScheduledFrom, "TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS":
			continue
		case PropTranMsg:
			if commit {
				continue
			}
		}
		msg.Properties = append(msg.Properties, batch.Property{Key: string(k), Value: string(v)})
	}
	if real == "" {
		return Message{}, fmt.Errorf("broker: scheduled message at %d has no %s", phys, PropRealTopic)
	}
	if t, ok := topic(real); ok && queue >= int(t.Queues) {
		queue = -1
	}
	if commit {
		msg.SysFlag = msg.SysFlag&^sysFlagTxnMask | sysFlagTxnCommit
	}
	msg.Topic = real
	return Message{Message: msg, Queue: queue, scheduledFrom: phys, isCopy: true}, nil
}

// produceInTerm stores the scheduler's copies in entries of their own,
// proposed only while this node leads in term. The shared batcher would
// retry a timed-out entry after the node lost leadership, forwarding it to
// the next leader, which may have delivered the same timer after its
// barrier: a duplicate. Here a lost attempt is abandoned instead, and the
// next leader's barrier decides what was delivered.
func (b *Broker) produceInTerm(ctx context.Context, term uint64, msgs []Message) ([]Result, error) {
	reqs := make([]*produceReq, 0, len(msgs))
	for k := range msgs {
		r, err := b.route(ctx, &msgs[k])
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, r)
	}
	keep := func() bool {
		st := b.node.Status()
		return st.Term == term && st.Leader == b.cfg.NodeID
	}
	out := make([]Result, 0, len(reqs))
	for len(reqs) > 0 {
		// As many as fit one entry.
		n, size := 0, batch.HeaderBytes
		for n < len(reqs) && n < b.cfg.MaxBatchMessages && (n == 0 || size+reqs[n].size <= b.cfg.MaxBatchBytes) {
			size += reqs[n].size
			n++
		}
		res, err := b.proposeBatch(ctx, reqs[:n], keep)
		if err != nil {
			return nil, err
		}
		out = append(out, res...)
		reqs = reqs[n:]
	}
	return out, nil
}
