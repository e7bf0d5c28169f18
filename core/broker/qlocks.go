package broker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/conflux-mq/conflux/core/broker/command"
)

// Queue locks: the lease an orderly consumer takes on a queue before it
// consumes it (RocketMQ's LOCK_BATCH_MQ). They are replicated, so every
// node grants or refuses alike, and a restart or a failover keeps them:
// two owners never hold one queue's live lease. Each command carries the
// proposer's clock and the lease length; a lease is live while the next
// command's time is within the length of the holder's. Nodes' clocks are
// assumed to agree to well within a lease (seconds against 60 s).

// QueueRef names a queue as a client sees it (topic, broker name, queue).
type QueueRef = command.LockQueue

type qlockKey struct {
	group, topic, broker string
	queue                uint32
}

type qlockLease struct {
	Owner string `json:"owner"`
	AtMs  int64  `json:"atMs"`
	// LeaseMs is the lease's length (0 in leases stored before it was
	// kept: the sweep then assumes the longest, maxLeaseMs).
	LeaseMs uint32 `json:"leaseMs,omitempty"`
}

// Lease sweeping: the Go client never releases a queue it lost, and any
// client may name any queue, so leases long expired are dropped. An
// expired lease grants and refuses exactly as an absent one, so when a
// replica sweeps does not change any answer; each sweep runs on the clock
// of an acquire command (in the entry), at most once per qlockSweepEveryMs.
const (
	qlockSweepEveryMs = 60_000
	qlockSweepGraceMs = 60_000
	maxLeaseMs        = 1 << 31
)

// qlockState is the replicated lock table, in metaState.
type qlockState struct {
	m       map[qlockKey]qlockLease
	dirty   map[qlockKey]struct{}
	sweptMs int64 // the command time of the last sweep (not replicated)
}

func newQLockState() *qlockState {
	return &qlockState{m: map[qlockKey]qlockLease{}, dirty: map[qlockKey]struct{}{}}
}

func (s *qlockState) apply(c command.Command) {
	for _, q := range c.LockQueues {
		k := qlockKey{c.Group, q.Topic, q.Broker, q.Queue}
		h, held := s.m[k]
		switch c.LockOp {
		case command.LockAcquire:
			if held && h.Owner != c.Owner && c.AtMs-h.AtMs <= int64(c.LeaseMs) {
				continue // another owner's live lease
			}
			at := c.AtMs
			if held && h.Owner == c.Owner && h.AtMs > at {
				at = h.AtMs // an older renewal applied late does not shorten it
			}
			s.m[k] = qlockLease{Owner: c.Owner, AtMs: at, LeaseMs: c.LeaseMs}
		case command.LockRelease:
			if !held || h.Owner != c.Owner {
				continue
			}
			delete(s.m, k)
		}
		s.dirty[k] = struct{}{}
	}
	// Only an acquire's clock is the lease clock (a release's is not
	// compared with anything).
	if c.LockOp == command.LockAcquire && c.AtMs-s.sweptMs >= qlockSweepEveryMs {
		s.sweptMs = c.AtMs
		for k, h := range s.m {
			lease := int64(h.LeaseMs)
			if lease == 0 {
				lease = maxLeaseMs
			}
			if c.AtMs-h.AtMs > lease+qlockSweepGraceMs {
				delete(s.m, k)
				s.dirty[k] = struct{}{}
			}
		}
	}
}

// LockQueues takes or renews owner's leases on qs for group, at time at
// for lease, and returns the queues it holds now. A queue another owner
// holds with a live lease is left out.
func (b *Broker) LockQueues(ctx context.Context, group, owner string, at time.Time, lease time.Duration, qs []QueueRef) ([]QueueRef, error) {
	if len(qs) == 0 {
		return nil, nil
	}
	if err := validLockNames(group, owner, qs); err != nil {
		return nil, err
	}
	atMs := at.UnixMilli()
	err := b.command(ctx, &command.Command{Kind: command.KindLockQueues, LockOp: command.LockAcquire, Group: group,
		Owner: owner, AtMs: atMs, LeaseMs: uint32(min(lease.Milliseconds(), 1<<31)), LockQueues: qs})
	if err != nil {
		return nil, err
	}
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	var out []QueueRef
	for _, q := range qs {
		if h, ok := b.sm.st.qlocks.m[qlockKey{group, q.Topic, q.Broker, q.Queue}]; ok && h.Owner == owner && h.AtMs >= atMs {
			out = append(out, q)
		}
	}
	return out, nil
}

// UnlockQueues releases owner's leases on qs.
func (b *Broker) UnlockQueues(ctx context.Context, group, owner string, qs []QueueRef) error {
	if len(qs) == 0 {
		return nil
	}
	if err := validLockNames(group, owner, qs); err != nil {
		return err
	}
	return b.command(ctx, &command.Command{Kind: command.KindLockQueues, LockOp: command.LockRelease, Group: group,
		Owner: owner, AtMs: time.Now().UnixMilli(), LockQueues: qs})
}

// validLockNames: names are NUL-separated in broker.db keys.
func validLockNames(group, owner string, qs []QueueRef) error {
	names := []string{group, owner}
	for _, q := range qs {
		names = append(names, q.Topic, q.Broker)
	}
	for _, n := range names {
		if strings.IndexByte(n, 0) >= 0 || len(n) > command.MaxNameBytes {
			return fmt.Errorf("broker: bad name %q in a queue lock", n)
		}
	}
	return nil
}

// QueueLockHolder returns who holds q's lease for group and since when.
func (b *Broker) QueueLockHolder(group string, q QueueRef) (string, time.Time, bool) {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	h, ok := b.sm.st.qlocks.m[qlockKey{group, q.Topic, q.Broker, q.Queue}]
	return h.Owner, time.UnixMilli(h.AtMs), ok
}

// ---- persistence ----

var bucketQLocks = []byte("qlocks")

func (k qlockKey) bytes() []byte {
	return binary.BigEndian.AppendUint32([]byte(k.group+"\x00"+k.topic+"\x00"+k.broker+"\x00"), k.queue)
}

func parseQLockKey(b []byte) (qlockKey, bool) {
	if len(b) < 7 {
		return qlockKey{}, false
	}
	parts := strings.Split(string(b[:len(b)-4]), "\x00")
	if len(parts) != 4 || parts[3] != "" {
		return qlockKey{}, false
	}
	return qlockKey{parts[0], parts[1], parts[2], binary.BigEndian.Uint32(b[len(b)-4:])}, true
}

func saveQLocks(tx *bolt.Tx, st *metaState) error {
	s := st.qlocks
	if len(s.dirty) == 0 {
		return nil
	}
	bk, err := tx.CreateBucketIfNotExists(bucketQLocks)
	if err != nil {
		return err
	}
	for k := range s.dirty {
		if h, ok := s.m[k]; ok {
			v, _ := json.Marshal(h)
			err = bk.Put(k.bytes(), v)
		} else {
			err = bk.Delete(k.bytes())
		}
		if err != nil {
			return err
		}
	}
	clear(s.dirty)
	return nil
}

func saveAllQLocks(tx *bolt.Tx, st *metaState) error {
	if tx.Bucket(bucketQLocks) != nil {
		if err := tx.DeleteBucket(bucketQLocks); err != nil {
			return err
		}
	}
	for k := range st.qlocks.m {
		st.qlocks.dirty[k] = struct{}{}
	}
	return saveQLocks(tx, st)
}

func loadQLocks(tx *bolt.Tx, st *metaState) error {
	st.qlocks = newQLockState()
	bk := tx.Bucket(bucketQLocks)
	if bk == nil {
		return nil
	}
	return bk.ForEach(func(k, v []byte) error {
		key, ok := parseQLockKey(k)
		var h qlockLease
		if !ok || json.Unmarshal(v, &h) != nil {
			return fmt.Errorf("bad queue lock %q", k)
		}
		st.qlocks.m[key] = h
		return nil
	})
}

// qlockEntry is a lease in a snapshot.
type qlockEntry struct {
	Group  string `json:"group"`
	Topic  string `json:"topic"`
	Broker string `json:"broker"`
	Queue  uint32 `json:"queue"`
	qlockLease
}

func (s *qlockState) snapshot() []qlockEntry {
	out := make([]qlockEntry, 0, len(s.m))
	for k, h := range s.m {
		out = append(out, qlockEntry{k.group, k.topic, k.broker, k.queue, h})
	}
	sort.Slice(out, func(i, j int) bool {
		return string(qlockKey{out[i].Group, out[i].Topic, out[i].Broker, out[i].Queue}.bytes()) <
			string(qlockKey{out[j].Group, out[j].Topic, out[j].Broker, out[j].Queue}.bytes())
	})
	return out
}

func qlocksFromSnapshot(es []qlockEntry) *qlockState {
	s := newQLockState()
	for _, e := range es {
		s.m[qlockKey{e.Group, e.Topic, e.Broker, e.Queue}] = e.qlockLease
	}
	return s
}
