package broker

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/core/log/batch"
)

// Errors of the delivery API.
var (
	ErrNotLeader      = errors.New("broker: deliveries are served by the leader")
	ErrNoSubscription = errors.New("broker: no such subscription")
)

// SubscriptionConfig creates a subscription.
type SubscriptionConfig struct {
	Name  string
	Topic string
	Queue uint32
	// FromLatest starts at the queue's end instead of its first retained
	// message.
	FromLatest    bool
	AckWait       time.Duration // lease of a delivery: 30s
	MaxDeliveries uint32        // then dead-lettered: 16 (RocketMQ's default)
	DeadLetter    string        // "%DLQ%" + Name
}

// Delivery is a message handed to a consumer of a subscription. Release
// its bytes when done, and settle it with Ack or Nack by Offset.
type Delivery struct {
	Fetched
	Offset uint64
	// Attempt counts this delivery (1 for the first). Redelivered is true
	// when it may have been delivered before.
	Attempt     uint32
	Redelivered bool
}

// Dead-lettered copies carry where they came from.
const (
	PropOriginTopic = "ORIGIN_TOPIC"
	PropOriginMsgID = "ORIGIN_MESSAGE_ID"
	PropDeliveries  = "DELIVERY_COUNT"
)

// Subscribe creates (or updates the limits of) a subscription.
func (b *Broker) Subscribe(ctx context.Context, c SubscriptionConfig) error {
	if c.Name == "" || len(c.Name) > command.MaxNameBytes {
		return fmt.Errorf("broker: bad subscription name %q", c.Name)
	}
	if _, err := b.topicForWrite(ctx, c.Topic); err != nil {
		return err
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 16
	}
	if c.DeadLetter == "" {
		c.DeadLetter = "%DLQ%" + c.Name
	}
	if !validTopic(c.DeadLetter) {
		return fmt.Errorf("%w: dead-letter topic %q", ErrInvalidTopic, c.DeadLetter)
	}
	start, next := b.QueueRange(c.Topic, c.Queue)
	if c.FromLatest {
		start = next
	}
	return b.command(ctx, &command.Command{
		Kind: command.KindSubscribe, Subscription: c.Name, Topic: c.Topic, Queue: c.Queue,
		StartOffset: start, AckWaitMs: uint32(min(c.AckWait.Milliseconds(), math.MaxUint32)),
		MaxDeliveries: c.MaxDeliveries, DeadLetter: c.DeadLetter,
	})
}

// Unsubscribe deletes a subscription and its delivery state.
func (b *Broker) Unsubscribe(ctx context.Context, name string) error {
	return b.command(ctx, &command.Command{Kind: command.KindUnsubscribe, Subscription: name})
}

// SubscriptionState returns a copy of a subscription's replicated state.
func (b *Broker) SubscriptionState(name string) (Subscription, bool) {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	s, ok := b.sm.st.Subs[name]
	if !ok {
		return Subscription{}, false
	}
	return s.clone(), true
}

// deliveries is the leader's soft state per subscription.
type deliveries struct {
	mu   sync.Mutex
	term uint64
	subs map[string]*subLeases
}

type subLeases struct {
	scan      uint64               // first offset never delivered by this leader
	inflight  map[uint64]time.Time // offset → lease end
	notBefore map[uint64]time.Time // failed offsets wait out a backoff
	seen      map[uint64]bool      // delivered by this leader at least once
}

// leases returns the subscription's soft state, starting afresh when this
// node became leader in a new term.
func (d *deliveries) leases(term uint64, s *Subscription) *subLeases {
	if d.term != term || d.subs == nil {
		d.term, d.subs = term, map[string]*subLeases{}
	}
	l := d.subs[s.Name]
	if l == nil {
		l = &subLeases{scan: s.Floor, inflight: map[uint64]time.Time{}, notBefore: map[uint64]time.Time{}, seen: map[uint64]bool{}}
		d.subs[s.Name] = l
	}
	return l
}

// Deliver hands out up to max messages of a subscription: first those
// whose lease ran out or whose retry backoff is over, then new ones. A
// delivery whose lease runs out counts as failed. Only the leader delivers.
func (b *Broker) Deliver(ctx context.Context, name string, max int) ([]Delivery, error) {
	st := b.node.Status()
	if !st.LeaderReady {
		return nil, ErrNotLeader
	}
	sub, ok := b.SubscriptionState(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSubscription, name)
	}
	b.dl.mu.Lock()
	l := b.dl.leases(st.Term, &sub)
	now := time.Now()
	var picks []uint64
	var expired []command.Settle
	for off, end := range l.inflight {
		if sub.isSettled(off) {
			delete(l.inflight, off)
		} else if now.After(end) {
			delete(l.inflight, off)
			expired = append(expired, command.Settle{Offset: off, Outcome: command.Failed})
		}
	}
	b.dl.mu.Unlock()
	if len(expired) > 0 {
		// Count the lapsed leases before redelivering, so a consumer that
		// never answers still ends in the dead-letter topic.
		if err := b.settle(ctx, name, expired); err != nil {
			return nil, err
		}
		if sub, ok = b.SubscriptionState(name); !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSubscription, name)
		}
	}
	end := b.queueEnd(sub.Topic, sub.Queue)
	lease := time.Duration(sub.AckWaitMs) * time.Millisecond
	b.dl.mu.Lock()
	// Pick from a state read under the lock: an Ack settles, then drops
	// its lease under this lock, so an older snapshot could show an acked
	// offset as neither settled nor leased and hand it out again.
	if sub, ok = b.SubscriptionState(name); !ok {
		b.dl.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNoSubscription, name)
	}
	picks = l.pick(&sub, now, max, end)
	// Lease the picks at once, under the same lock, so a concurrent
	// Deliver cannot pick them too.
	for _, off := range picks {
		l.inflight[off] = now.Add(lease)
	}
	b.dl.mu.Unlock()
	return b.fetchDeliveries(ctx, &sub, l, picks)
}

func (b *Broker) queueEnd(topic string, queue uint32) uint64 {
	_, next := b.QueueRange(topic, queue)
	return next
}

// pick chooses offsets to deliver: retries that are due first, then new
// offsets from scan. Called with the deliveries lock held.
func (l *subLeases) pick(s *Subscription, now time.Time, max int, end uint64) []uint64 {
	var out []uint64
	for off := range s.Failures {
		if len(out) >= max {
			return out
		}
		if _, busy := l.inflight[off]; !busy && !now.Before(l.notBefore[off]) && off < l.scan {
			out = append(out, off)
		}
	}
	l.scan = maxU64(l.scan, s.Floor)
	// Offsets below scan that are neither settled nor in flight nor
	// failed were released by a consumer: deliver them again, before
	// new ones (AMQP puts a requeued message back in its place).
	for off := s.Floor; off < l.scan && len(out) < max; off++ {
		if _, busy := l.inflight[off]; busy || s.isSettled(off) || s.Failures[off] > 0 || contains(out, off) {
			continue
		}
		out = append(out, off)
	}
	for off := l.scan; off < end && len(out) < max; off++ {
		l.scan = off + 1
		if _, busy := l.inflight[off]; busy || s.isSettled(off) {
			continue
		}
		out = append(out, off)
	}
	return out
}

func contains(xs []uint64, x uint64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func maxU64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// fetchDeliveries reads the picked offsets, dead-letters those that have
// used up their deliveries, and leases the rest.
func (b *Broker) fetchDeliveries(ctx context.Context, s *Subscription, l *subLeases, picks []uint64) ([]Delivery, error) {
	var out []Delivery
	lease := time.Duration(s.AckWaitMs) * time.Millisecond
	for _, off := range picks {
		ms, _, err := b.Fetch(s.Topic, s.Queue, off, FetchOptions{MaxMessages: 1})
		if err != nil {
			releaseDeliveries(out)
			b.dropLeases(s.Name, picks, nil) // nothing was handed out
			return nil, err
		}
		if len(ms) == 0 || ms[0].QueueOffset != off {
			releaseAll(ms)
			b.dropLeases(s.Name, []uint64{off}, nil)
			continue // removed by retention: nothing left to deliver
		}
		attempt := s.Failures[off] + 1
		if attempt > s.MaxDeliveries {
			err := b.deadLetter(ctx, s, ms[0], attempt-1)
			ms[0].Release()
			b.dropLeases(s.Name, []uint64{off}, nil)
			if err != nil {
				releaseDeliveries(out)
				return nil, err
			}
			continue
		}
		b.dl.mu.Lock()
		l.inflight[off] = time.Now().Add(lease)
		redelivered := l.seen[off] || attempt > 1
		l.seen[off] = true
		b.dl.mu.Unlock()
		out = append(out, Delivery{Fetched: ms[0], Offset: off, Attempt: attempt, Redelivered: redelivered})
	}
	return out, nil
}

func releaseDeliveries(ds []Delivery) {
	for _, d := range ds {
		d.Release()
	}
}

// Ack settles deliveries as consumed.
func (b *Broker) Ack(ctx context.Context, name string, offsets ...uint64) error {
	st := make([]command.Settle, len(offsets))
	for k, o := range offsets {
		st[k] = command.Settle{Offset: o, Outcome: command.Acked}
	}
	// Settle first: dropping the lease before the ack is applied would let
	// a concurrent Deliver hand the message out again.
	if err := b.settle(ctx, name, st); err != nil {
		return err
	}
	b.dropLeases(name, offsets, nil)
	return nil
}

// Nack reports failed deliveries. With requeue they come back after a
// backoff (RetryBackoff doubling per failure, at most 1 min) until MaxDeliveries,
// then go to the dead-letter topic; without requeue they go there at once.
func (b *Broker) Nack(ctx context.Context, name string, requeue bool, offsets ...uint64) error {
	sub, ok := b.SubscriptionState(name)
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoSubscription, name)
	}
	if !requeue {
		for _, off := range offsets {
			ms, _, err := b.Fetch(sub.Topic, sub.Queue, off, FetchOptions{MaxMessages: 1})
			if err != nil {
				return err
			}
			if len(ms) == 1 && ms[0].QueueOffset == off {
				err = b.deadLetter(ctx, &sub, ms[0], sub.Failures[off]+1)
				ms[0].Release()
				if err != nil {
					return err
				}
			}
		}
		b.dropLeases(name, offsets, nil)
		return nil
	}
	st := make([]command.Settle, len(offsets))
	for k, o := range offsets {
		st[k] = command.Settle{Offset: o, Outcome: command.Failed}
	}
	if err := b.settle(ctx, name, st); err != nil {
		return err
	}
	b.dropLeases(name, offsets, func(off uint64) time.Duration {
		return min(b.cfg.RetryBackoff<<min(sub.Failures[off], 6), time.Minute)
	})
	return nil
}

// Release hands deliveries back without counting a failure (a consumer
// that went away); they are delivered again at once, marked redelivered.
func (b *Broker) Release(name string, offsets ...uint64) { b.dropLeases(name, offsets, nil) }

func (b *Broker) dropLeases(name string, offsets []uint64, backoff func(uint64) time.Duration) {
	b.dl.mu.Lock()
	defer b.dl.mu.Unlock()
	l := b.dl.subs[name]
	if l == nil {
		return
	}
	for _, off := range offsets {
		delete(l.inflight, off)
		if backoff != nil {
			l.notBefore[off] = time.Now().Add(backoff(off))
		}
	}
}

func (b *Broker) settle(ctx context.Context, name string, st []command.Settle) error {
	if len(st) == 0 {
		return nil
	}
	return b.command(ctx, &command.Command{Kind: command.KindSettle, Subscription: name, Settles: st})
}

// deadLetter copies the message to the subscription's dead-letter topic,
// keeping its origin in properties, then settles it. A crash in between
// can leave a second copy (at-least-once), never none.
func (b *Broker) deadLetter(ctx context.Context, s *Subscription, f Fetched, failures uint32) error {
	m, err := f.Decode()
	if err != nil {
		return err
	}
	orig := m.ID
	m.ID, m.Destinations = [16]byte{}, nil
	m.Properties = append(m.Properties,
		batch.Property{Key: PropOriginTopic, Value: s.Topic},
		batch.Property{Key: PropOriginMsgID, Value: hex.EncodeToString(orig[:])},
		batch.Property{Key: PropDeliveries, Value: strconv.FormatUint(uint64(failures), 10)})
	m.Topic = s.DeadLetter
	if _, err := b.produce(ctx, []Message{{Message: m, Queue: 0}}); err != nil {
		return fmt.Errorf("broker: dead-letter to %s: %w", s.DeadLetter, err)
	}
	return b.settle(ctx, s.Name, []command.Settle{{Offset: f.QueueOffset, Outcome: command.DeadLettered}})
}

// ReadyCount counts a subscription's messages that wait for delivery:
// neither settled nor in flight (in flight as this node, the leader, knows
// it).
func (b *Broker) ReadyCount(name string) (uint64, bool) {
	sub, ok := b.SubscriptionState(name)
	if !ok {
		return 0, false
	}
	return uint64(len(b.readyOffsets(&sub))), true
}

// Purge settles every ready message of a subscription (AMQP queue.purge):
// messages in flight stay, to be acknowledged or released later. It
// returns how many it settled.
func (b *Broker) Purge(ctx context.Context, name string) (uint64, error) {
	sub, ok := b.SubscriptionState(name)
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrNoSubscription, name)
	}
	offs := b.readyOffsets(&sub)
	total := uint64(len(offs))
	for len(offs) > 0 {
		n := min(len(offs), 4096) // one bounded command per chunk
		st := make([]command.Settle, n)
		for k, o := range offs[:n] {
			st[k] = command.Settle{Offset: o, Outcome: command.Acked}
		}
		if err := b.settle(ctx, name, st); err != nil {
			return 0, err
		}
		offs = offs[n:]
	}
	return total, nil
}

// readyOffsets lists the offsets of s that are neither settled nor leased.
func (b *Broker) readyOffsets(s *Subscription) []uint64 {
	end := b.queueEnd(s.Topic, s.Queue)
	term := b.node.Status().Term
	b.dl.mu.Lock()
	defer b.dl.mu.Unlock()
	var inflight map[uint64]time.Time
	if l := b.dl.subs[s.Name]; l != nil && b.dl.term == term {
		inflight = l.inflight
	}
	var out []uint64
	for off := s.Floor; off < end; off++ {
		if _, busy := inflight[off]; !busy && !s.isSettled(off) {
			out = append(out, off)
		}
	}
	return out
}
