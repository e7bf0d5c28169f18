package broker

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/broker/command"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/log/vfs"
	"github.com/conflux-mq/conflux/core/txn"
)

// stateMachine applies committed entries: message batches go to the
// dispatcher (consume queues and index), commands to the metadata store.
// Apply and the other raft.StateMachine methods run in the raft loop;
// readers take mu.
type stateMachine struct {
	cfg  Config
	meta *metaStore
	log  *clog.Log
	disp *clog.Dispatcher

	mu sync.RWMutex
	st metaState

	// results of batches this node proposed, by proposal id, until their
	// producers collect them (or ResultTTL passes).
	resMu   sync.Mutex
	results map[uint64]batchResult
	swept   time.Time // last sweep of unclaimed results

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every apply

	// checks carries applied check-backs to the gateway's checker.
	checks chan txn.Half

	// Retention passes run in the raft loop (retention.go).
	retMark   retentionMark
	retention retentionStats
}

type batchResult struct {
	index   uint64
	offsets []uint64   // physical offset per message
	queues  [][]uint64 // queue offset per message per destination
	at      time.Time
}

func newStateMachine(cfg Config) (*stateMachine, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("broker: data dir: %w", err)
	}
	meta, err := openMetaStore(vfs.Join(cfg.DataDir, "broker.db"))
	if err != nil {
		return nil, err
	}
	st, err := meta.load()
	if err != nil {
		_ = meta.close()
		return nil, err
	}
	return &stateMachine{cfg: cfg, meta: meta, st: st, results: map[uint64]batchResult{}, notify: make(chan struct{}),
		checks: make(chan txn.Half, maxPendingChecks)}, nil
}

func (m *metaStore) close() error { return m.db.Close() }

// OpenLog recovers the dispatcher up to the log's commit index and applies
// the commands it has not seen, so AppliedIndex can be the dispatcher's.
func (s *stateMachine) OpenLog(l *clog.Log) error {
	s.log = l
	d, err := clog.OpenDispatcher(l, s.cfg.Dispatch)
	if err != nil {
		return err
	}
	s.disp = d
	first, _ := l.FirstIndex()
	from := max(s.st.Applied+1, first)
	hi := d.DispatchedIndex()
	// An entry is dispatched only once it is committed and durable here,
	// so the dispatcher's checkpoint proves a commit index that raft may
	// not have saved yet (it saves its own lazily; a crash or a storage
	// failure can stop it before). See "Restart" in core/raft/doc.go.
	if last, _ := l.LastIndex(); hi > last {
		return fmt.Errorf("broker: consume queues were built up to entry %d but the log ends at %d: synced data was lost; wipe this node and re-add it", hi, last)
	}
	l.SetCommitted(hi)
	if from > hi {
		return nil
	}
	var cmds []command.Command
	var last uint64
	err = l.Scan(from, hi+1, func(r clog.Record) error {
		if r.Type == raftpb.EntryNormal && command.IsCommand(r.Data) {
			c, err := command.Decode(r.Data)
			if err != nil {
				return fmt.Errorf("broker: command at %d: %w", r.Index, err)
			}
			cmds, last = append(cmds, c), r.Index
		} else if r.Type == raftpb.EntryNormal && len(r.Data) > 0 {
			// The schedule saved in broker.db stops at Applied too.
			ch, err := s.scanBatch(r.Index, r.Data)
			if err != nil {
				return err
			}
			if ch {
				last = r.Index
			}
		}
		return nil
	})
	if err != nil || last == 0 {
		return err
	}
	err = s.applyCommands(cmds, last)
	s.st.sched.checks = nil // nobody to ask yet: the next round asks again
	return err
}

// AppliedIndex is where the dispatcher stands: it checkpoints its own
// progress, and commands up to it are in broker.db (OpenLog made sure).
func (s *stateMachine) AppliedIndex() uint64 { return s.disp.DispatchedIndex() }

// Apply applies committed entries in order.
func (s *stateMachine) Apply(ents []raftpb.Entry) error {
	var cmds []command.Command
	var lastCmd uint64
	for _, e := range ents {
		// broker.db may already hold commands the raft log replays after a
		// restart (its applied index is saved with every command run, the
		// commit index only lazily): applying one twice would, for a
		// failed delivery, count it twice.
		if command.IsCommand(e.Data) && e.Index > s.st.Applied {
			c, err := command.Decode(e.Data)
			if err != nil {
				return fmt.Errorf("broker: command at %d: %w", e.Index, err)
			}
			cmds, lastCmd = append(cmds, c), e.Index
		}
	}
	if err := s.disp.DispatchTo(ents[len(ents)-1].Index); err != nil {
		return err
	}
	// Scheduled messages (sched.go): batches add timers and half messages
	// and remove delivered ones. Entries at or below Applied are already
	// in broker.db.
	schedChanged := false
	for _, e := range ents {
		if e.Type == raftpb.EntryNormal && e.Index > s.st.Applied && len(e.Data) > 0 && !command.IsCommand(e.Data) {
			ch, err := s.scanBatch(e.Index, e.Data)
			if err != nil {
				return err
			}
			schedChanged = schedChanged || ch
		}
	}
	if len(cmds) > 0 || schedChanged {
		idx := lastCmd
		if schedChanged {
			idx = ents[len(ents)-1].Index
		}
		if err := s.applyCommands(cmds, idx); err != nil {
			return err
		}
		s.handOverChecks()
	}
	for _, e := range ents {
		if !command.IsCommand(e.Data) && s.ownBatch(e.Data) {
			if err := s.recordResult(e); err != nil {
				return err
			}
		}
	}
	s.wake()
	return nil
}

func (s *stateMachine) applyCommands(cmds []command.Command, index uint64) error {
	s.mu.Lock()
	for _, c := range cmds {
		s.st.applyCommand(c)
	}
	s.st.Applied = index
	s.mu.Unlock()
	return s.meta.apply(cmds, &s.st, index)
}

func (st *metaState) applyCommand(c command.Command) {
	switch c.Kind {
	case command.KindCreateTopic:
		st.Topics[c.Topic] = Topic{Name: c.Topic, Queues: c.Queues, Perm: c.Perm}
	case command.KindDeleteTopic:
		delete(st.Topics, c.Topic)
	case command.KindCommitOffsets:
		for _, o := range c.Offsets {
			st.offsets[offsetKey{group: c.Group, topic: o.Topic, queue: o.Queue}] = o.Offset
		}
	case command.KindRecords:
		st.applyRecords(c.Records)
	case command.KindSchedule:
		st.sched.applySched(c.Scheds)
	case command.KindLockQueues:
		st.qlocks.apply(c)
	default:
		st.applySubCommand(c)
	}
}

// ownBatch: was this batch proposed by this node (its id carries our id)?
func (s *stateMachine) ownBatch(data []byte) bool {
	id, ok := command.ProposalID(data)
	return ok && id>>48 == s.cfg.NodeID
}

// recordResult keeps each message's physical and queue offsets for the
// producer waiting on this node.
func (s *stateMachine) recordResult(e raftpb.Entry) error {
	h, err := batch.ParseHeader(e.Data)
	if err != nil {
		return nil // not a batch
	}
	base, err := s.log.DataOffset(e.Index)
	if err != nil {
		return err
	}
	r := batchResult{index: e.Index, at: time.Now()}
	var it batch.Iterator
	if err := it.Init(e.Data); err != nil {
		return err
	}
	for it.Next() {
		v := it.View()
		r.offsets = append(r.offsets, base+uint64(v.Pos()))
		qs := make([]uint64, v.NumDestinations())
		for i, d := range v.Destinations {
			qs[i] = d.QueueOffset
		}
		r.queues = append(r.queues, qs)
	}
	s.resMu.Lock()
	s.results[h.BatchID] = r
	s.resMu.Unlock()
	return it.Err()
}

func (s *stateMachine) takeResult(id uint64) (batchResult, bool) {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	r, ok := s.results[id]
	delete(s.results, id)
	// Drop answers nobody came for (their producer gave up); a sweep per
	// half TTL is enough, not one per produced batch.
	if now := time.Now(); now.Sub(s.swept) > s.cfg.ResultTTL/2 {
		s.swept = now
		for k, old := range s.results {
			if now.Sub(old.at) > s.cfg.ResultTTL {
				delete(s.results, k)
			}
		}
	}
	return r, ok
}

func (s *stateMachine) wake() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

// changed returns a channel closed at the next apply.
func (s *stateMachine) changed() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

// BeforeRetention checkpoints the consume queues and index up to the applied
// index, so nothing they would need to replay after a crash is deleted.
func (s *stateMachine) BeforeRetention() error {
	s.markRetention()
	return s.disp.Checkpoint()
}

// AfterRetention drops queue units and index entries below the log's start.
// It then reports what went that someone still needed (retention.go).
func (s *stateMachine) AfterRetention() error {
	if err := s.disp.Trim(); err != nil {
		return err
	}
	s.reportRetention()
	return nil
}

// Snapshot returns the replicated metadata (messages stay in the log).
func (s *stateMachine) Snapshot() ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Every queue's end goes along: a follower restored from the snapshot
	// has empty consume queues, and if it leads later its offsets must
	// continue where the queues stood, also for queues nobody writes to
	// before then.
	bases := map[queueKey]uint64{}
	for q, b := range s.st.bases {
		bases[q] = b
	}
	for _, q := range s.disp.Queues().Queues() {
		_, next, _ := s.disp.Queues().Range(q.Topic, q.Queue)
		k := queueKey{q.Topic, q.Queue}
		bases[k] = max(bases[k], next)
	}
	return s.st.marshal(bases)
}

// Restore replaces the metadata with a snapshot's and restarts the
// dispatcher at the log's new start (the node reset the log first).
func (s *stateMachine) Restore(data []byte, index uint64) error {
	st, err := unmarshalMeta(data)
	if err != nil {
		return err
	}
	// The metadata may reflect entries after index (see raft.StateMachine):
	// its own Applied makes Apply skip the commands it already holds while
	// the entries after index are applied again.
	st.Applied = max(st.Applied, index)
	if err := s.meta.replace(&st); err != nil {
		return err
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	if s.disp != nil {
		if err := s.disp.Reset(); err != nil {
			return err
		}
	}
	s.wake()
	return nil
}

func (s *stateMachine) close() error {
	var errs []error
	if s.disp != nil {
		errs = append(errs, s.disp.Checkpoint(), s.disp.Close())
	}
	errs = append(errs, s.meta.close())
	return errors.Join(errs...)
}

// queueRange reads a queue's bounds (0, 0 for a queue never written). A
// queue that holds no unit on this replica since it was restored from a
// snapshot starts at its base: where it stood when the snapshot was made.
func (s *stateMachine) queueRange(topic string, queue uint32) (uint64, uint64) {
	lo, next, ok := s.disp.Range(topic, queue)
	if ok {
		return lo, next
	}
	s.mu.RLock()
	base := s.st.bases[queueKey{topic, queue}]
	s.mu.RUnlock()
	return base, base
}
