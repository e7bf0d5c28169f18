package broker

import (
	"container/heap"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/txn"
)

// Scheduled messages: delays, timers and transactional half messages.
//
// A delayed or half message is stored once, in a system topic no consumer
// reads (TimerTopic, HalfTopic), with its real destination in properties.
// Every replica derives the schedule from the log as it applies it: a
// batch storing a message in TimerTopic adds a timer (physical offset →
// due time), one storing into HalfTopic adds a half message (core/txn).
// Transaction decisions and check-backs are commands (kind 8).
//
// Only the leader acts on the schedule: it copies due timers and committed
// half messages to their real topic. Each copy carries PropScheduledFrom,
// the physical offset it was made from, and applying the entry that stores
// the copy removes the timer or half message on every replica: the
// delivery and the bookkeeping are one Raft entry, so they commit together
// or not at all. A new leader first commits a barrier (an empty schedule
// command) and so has applied every entry of earlier terms before it plans
// anything: it sees exactly the deliveries that happened.
//
// The schedule is saved in broker.db (bucket "sched") with the applied
// index and carried in snapshots; after a restart the entries between the
// saved index and the dispatcher's are scanned again (OpenLog), which is
// idempotent.

// System topics and properties of scheduled messages (RocketMQ's names
// where RocketMQ has one).
const (
	TimerTopic = "rmq_sys_wheel_timer"
	HalfTopic  = "RMQ_SYS_TRANS_HALF_TOPIC"

	PropRealTopic     = "REAL_TOPIC"
	PropRealQueue     = "REAL_QID"
	PropTimerOutMs    = "TIMER_OUT_MS"
	PropProducerGroup = "PGROUP"
	PropTranMsg       = "TRAN_MSG"
	PropDelay         = "DELAY"
	// PropScheduledFrom marks a delivered copy with the physical offset of
	// the timer or half message it was made from.
	PropScheduledFrom = "CFX_SCHEDULED_FROM"
)

// RocketMQ sysFlag transaction bits.
const (
	sysFlagTxnMask     = 0x0C
	sysFlagTxnPrepared = 0x04
	sysFlagTxnCommit   = 0x08
)

// Errors of scheduled messages.
var (
	ErrDelayTooLong = errors.New("broker: delay beyond the maximum")
	ErrNoHalf       = errors.New("broker: no such open half message")
)

// ScheduleConfig configures delays, timers and transactions.
type ScheduleConfig struct {
	// DelayLevels are RocketMQ's delay levels, level 1 first.
	DelayLevels []time.Duration // 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h
	// MaxDelay bounds how far ahead a message may be scheduled.
	MaxDelay time.Duration // 40 days
	// Tick is how often the leader looks for due work.
	Tick time.Duration // 100ms
	// MaxDeliveriesPerTick bounds the copies one tick proposes.
	MaxDeliveriesPerTick int // 2048
	Txn                  txn.Config
}

// DefaultDelayLevels is RocketMQ's messageDelayLevel.
const DefaultDelayLevels = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"

// ParseDelayLevels reads a space-separated list of durations ("1s 5s 1m").
func ParseDelayLevels(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Fields(s) {
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, fmt.Errorf("broker: delay level %q: %w", f, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func (c ScheduleConfig) withDefaults() ScheduleConfig {
	if len(c.DelayLevels) == 0 {
		c.DelayLevels, _ = ParseDelayLevels(DefaultDelayLevels)
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 40 * 24 * time.Hour
	}
	if c.Tick == 0 {
		c.Tick = 100 * time.Millisecond
	}
	if c.MaxDeliveriesPerTick == 0 {
		c.MaxDeliveriesPerTick = 2048
	}
	c.Txn = c.Txn.WithDefaults()
	return c
}

func (c ScheduleConfig) validate() error {
	if len(c.DelayLevels) > 64 {
		return fmt.Errorf("broker: %d delay levels, at most 64", len(c.DelayLevels))
	}
	for i, d := range c.DelayLevels {
		if d <= 0 || d > c.MaxDelay {
			return fmt.Errorf("broker: delay level %d (%v) outside (0, MaxDelay]", i+1, d)
		}
	}
	switch {
	case c.MaxDelay <= 0:
		return errors.New("broker: MaxDelay must be positive")
	case c.Tick < time.Millisecond || c.Tick > time.Second:
		return fmt.Errorf("broker: schedule Tick %v outside [1ms, 1s]", c.Tick)
	case c.MaxDeliveriesPerTick < 1 || c.MaxDeliveriesPerTick > batch.MaxDestinations*1024:
		return fmt.Errorf("broker: MaxDeliveriesPerTick %d out of range", c.MaxDeliveriesPerTick)
	}
	return c.Txn.Validate()
}

// DelayForLevel returns the delay of a RocketMQ delay level; levels above
// the table's end are clamped to its last level (as RocketMQ does), and
// levels below 1 mean no delay.
func (b *Broker) DelayForLevel(level int) time.Duration {
	lv := b.cfg.Schedule.DelayLevels
	switch {
	case level < 1:
		return 0
	case level > len(lv):
		level = len(lv)
	}
	return lv[level-1]
}

// DelayLevels is the number of delay levels.
func (b *Broker) DelayLevels() int { return len(b.cfg.Schedule.DelayLevels) }

// MaxDelay is the longest accepted delay.
func (b *Broker) MaxDelay() time.Duration { return b.cfg.Schedule.MaxDelay }

// ---- the replicated schedule ----

type timerEntry struct {
	Phys  uint64 `json:"phys"`
	DueMs int64  `json:"dueMs"`
}

// timerHeap orders timers by due time. Entries are removed lazily: one
// whose timer is gone from the map (or changed) is skipped when popped.
type timerHeap []timerEntry

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	return h[i].DueMs < h[j].DueMs || h[i].DueMs == h[j].DueMs && h[i].Phys < h[j].Phys
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// schedState is the part of metaState derived from scheduled messages.
// The raft loop writes it under the state machine's lock; the leader's
// scheduler pops the heap under the same lock.
type schedState struct {
	timers map[uint64]int64
	heap   timerHeap
	halves *txn.Table
	// dirty: keys changed since the last save to broker.db.
	dirty map[schedKey]struct{}
	// checks are check-backs applied in the current Apply, handed to the
	// gateway's checker after the lock is released.
	checks []txn.Half
}

type schedKey struct {
	kind byte // 't' timer, 'h' half message
	phys uint64
}

func (k schedKey) bytes() []byte { return binary.BigEndian.AppendUint64([]byte{k.kind}, k.phys) }

func newSchedState() *schedState {
	return &schedState{timers: map[uint64]int64{}, halves: txn.NewTable(), dirty: map[schedKey]struct{}{}}
}

func (s *schedState) addTimer(phys uint64, dueMs int64) {
	if _, ok := s.timers[phys]; ok {
		return
	}
	s.timers[phys] = dueMs
	heap.Push(&s.heap, timerEntry{Phys: phys, DueMs: dueMs})
	s.dirty[schedKey{'t', phys}] = struct{}{}
}

func (s *schedState) removeTimer(phys uint64) bool {
	if _, ok := s.timers[phys]; !ok {
		return false
	}
	delete(s.timers, phys)
	s.dirty[schedKey{'t', phys}] = struct{}{}
	// Followers never pop: drop dead heap entries once they dominate.
	if len(s.heap) > 1024 && len(s.heap) > 2*len(s.timers) {
		s.rebuildHeap()
	}
	return true
}

func (s *schedState) rebuildHeap() {
	s.heap = make(timerHeap, 0, len(s.timers))
	for p, d := range s.timers {
		s.heap = append(s.heap, timerEntry{Phys: p, DueMs: d})
	}
	heap.Init(&s.heap)
}

// popDue takes up to max due timers off the heap (the leader delivers
// them; if that fails it rebuilds the heap from the map).
func (s *schedState) popDue(nowMs int64, max int) []timerEntry {
	var out []timerEntry
	for len(s.heap) > 0 && len(out) < max && s.heap[0].DueMs <= nowMs {
		e := heap.Pop(&s.heap).(timerEntry)
		if d, ok := s.timers[e.Phys]; ok && d == e.DueMs {
			out = append(out, e)
		}
	}
	return out
}

// applySched applies one schedule command.
func (s *schedState) applySched(ops []command.Sched) {
	for _, op := range ops {
		switch op.Op {
		case command.SchedCommit, command.SchedRollback:
			d := txn.Commit
			if op.Op == command.SchedRollback {
				d = txn.Rollback
			}
			if s.halves.Decide(op.Phys, d) {
				s.dirty[schedKey{'h', op.Phys}] = struct{}{}
			}
		case command.SchedChecked:
			if s.halves.Checked(op.Phys, op.AtMs) {
				s.dirty[schedKey{'h', op.Phys}] = struct{}{}
				h, _ := s.halves.Get(op.Phys)
				s.checks = append(s.checks, h)
			}
		case command.SchedDrop:
			s.removeTimer(op.Phys)
			if s.halves.Remove(op.Phys) {
				s.dirty[schedKey{'h', op.Phys}] = struct{}{}
			}
		}
	}
}

// scanBatch updates the schedule from one applied message batch: new
// timers and half messages, and delivered copies. It reports whether
// anything changed.
func (s *stateMachine) scanBatch(index uint64, data []byte) (bool, error) {
	h, err := batch.ParseHeader(data)
	if err != nil {
		return false, nil // not a batch
	}
	var it batch.Iterator
	if err := it.Init(data); err != nil {
		return false, nil
	}
	var base uint64
	haveBase := false
	phys := func(v batch.View) (uint64, error) {
		if !haveBase {
			b, err := s.log.DataOffset(index)
			if err != nil {
				return 0, err
			}
			base, haveBase = b, true
		}
		return base + uint64(v.Pos()), nil
	}
	changed := false
	for it.Next() {
		v := it.View()
		if v.NumDestinations() == 0 {
			continue
		}
		d0 := v.Destination(0)
		switch string(d0.Topic) {
		case TimerTopic:
			p, err := phys(v)
			if err != nil {
				return changed, err
			}
			due, _ := strconv.ParseInt(string(property(v, PropTimerOutMs)), 10, 64)
			s.mu.Lock()
			s.st.sched.addTimer(p, due)
			s.mu.Unlock()
			changed = true
		case HalfTopic:
			p, err := phys(v)
			if err != nil {
				return changed, err
			}
			hf := txn.Half{Phys: p, QueueOffset: d0.QueueOffset, Group: string(property(v, PropProducerGroup)), StoreMs: h.StoreUnixMs}
			s.mu.Lock()
			s.st.sched.halves.Add(hf)
			s.st.sched.dirty[schedKey{'h', p}] = struct{}{}
			s.mu.Unlock()
			changed = true
		default:
			if v.NumProperties() == 0 {
				continue
			}
			from := property(v, PropScheduledFrom)
			if from == nil {
				continue
			}
			src, err := strconv.ParseUint(string(from), 10, 64)
			if err != nil {
				continue
			}
			s.mu.Lock()
			if s.st.sched.removeTimer(src) {
				changed = true
			}
			if s.st.sched.halves.Remove(src) {
				s.st.sched.dirty[schedKey{'h', src}] = struct{}{}
				changed = true
			}
			s.mu.Unlock()
		}
	}
	return changed, it.Err()
}

// property returns the first value of a property, nil when missing.
func property(v batch.View, key string) []byte {
	var out []byte
	for k, val := range v.Properties {
		if string(k) == key {
			out = val
			if out == nil {
				out = []byte{}
			}
			break
		}
	}
	return out
}

// ---- persistence ----

var bucketSched = []byte("sched")

// saveSched writes the dirty schedule keys (in the caller's transaction).
func saveSched(tx *bolt.Tx, st *metaState) error {
	s := st.sched
	b, err := tx.CreateBucketIfNotExists(bucketSched)
	if err != nil {
		return err
	}
	for k := range s.dirty {
		var v []byte
		switch k.kind {
		case 't':
			if due, ok := s.timers[k.phys]; ok {
				v = binary.BigEndian.AppendUint64(nil, uint64(due))
			}
		case 'h':
			if h, ok := s.halves.Get(k.phys); ok {
				v, _ = json.Marshal(h)
			}
		}
		if v != nil {
			err = b.Put(k.bytes(), v)
		} else {
			err = b.Delete(k.bytes())
		}
		if err != nil {
			return err
		}
	}
	clear(s.dirty)
	return nil
}

func saveAllSched(tx *bolt.Tx, st *metaState) error {
	if tx.Bucket(bucketSched) != nil {
		if err := tx.DeleteBucket(bucketSched); err != nil {
			return err
		}
	}
	s := st.sched
	for p := range s.timers {
		s.dirty[schedKey{'t', p}] = struct{}{}
	}
	for _, h := range s.halves.All() {
		s.dirty[schedKey{'h', h.Phys}] = struct{}{}
	}
	return saveSched(tx, st)
}

func loadSched(tx *bolt.Tx, st *metaState) error {
	st.sched = newSchedState()
	b := tx.Bucket(bucketSched)
	if b == nil {
		return nil
	}
	err := b.ForEach(func(k, v []byte) error {
		if len(k) != 9 {
			return fmt.Errorf("bad schedule key %x", k)
		}
		phys := binary.BigEndian.Uint64(k[1:])
		switch k[0] {
		case 't':
			if len(v) != 8 {
				return fmt.Errorf("bad timer %x", k)
			}
			st.sched.timers[phys] = int64(binary.BigEndian.Uint64(v))
		case 'h':
			var h txn.Half
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("half message %d: %w", phys, err)
			}
			st.sched.halves.Add(h)
		default:
			return fmt.Errorf("bad schedule key %x", k)
		}
		return nil
	})
	st.sched.rebuildHeap()
	return err
}

// schedSnapshot is the schedule's part of a snapshot.
type schedSnapshot struct {
	Timers []timerEntry `json:"timers,omitempty"`
	Halves []txn.Half   `json:"halves,omitempty"`
}

func (s *schedState) snapshot() schedSnapshot {
	var out schedSnapshot
	for p, d := range s.timers {
		out.Timers = append(out.Timers, timerEntry{Phys: p, DueMs: d})
	}
	// Sorted, so snapshots of equal states are equal bytes.
	sort.Slice(out.Timers, func(i, j int) bool { return timerHeap(out.Timers).Less(i, j) })
	out.Halves = s.halves.All()
	return out
}

func schedFromSnapshot(snap schedSnapshot) *schedState {
	s := newSchedState()
	for _, t := range snap.Timers {
		s.timers[t.Phys] = t.DueMs
	}
	for _, h := range snap.Halves {
		s.halves.Add(h)
	}
	s.rebuildHeap()
	return s
}
