package log

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/log/cq"
	"github.com/conflux-mq/conflux/core/log/index"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

// DispatchConfig configures the consume queues and the key/id index that a
// Dispatcher builds next to the log (in the log's Dir).
type DispatchConfig struct {
	// UnitsPerQueueFile sizes consume-queue files (cq.DefaultUnitsPerFile).
	UnitsPerQueueFile int
	// IndexSlots and IndexEntriesPerFile size key-index files.
	IndexSlots, IndexEntriesPerFile int
	// CheckpointEveryEntries makes Dispatch checkpoint by itself after that
	// many entries (default 4096); the owner may also call Checkpoint.
	CheckpointEveryEntries int
}

// Dispatcher turns committed entries into consume-queue units (one per
// message destination: store once, index many) and key/id index entries.
// One goroutine calls Dispatch, Checkpoint and Trim; reads (Queue, Query*)
// are safe from any goroutine. After a failed dispatch or sync every write
// refuses: reopen with OpenDispatcher, which recovers from the checkpoint.
type Dispatcher struct {
	// mu keeps readers off the stores while Reset swaps them (the writer
	// methods run on one goroutine, as Reset does, and need no lock).
	mu    sync.RWMutex
	log   *Log
	fs    vfs.FS
	dir   string
	cfg   DispatchConfig
	cq    *cq.Store
	idx   *index.Index
	ckpt  checkpoint // as of the last Checkpoint
	index uint64     // last dispatched entry
	end   uint64     // log offset after the last dispatched record
	since int        // entries since the last checkpoint
	it    batch.Iterator
	key   []byte
	// failed is the first error that left the queues or the index partly
	// written (a dispatch that stopped inside an entry) or not known to be
	// durable (a failed sync). Dispatching that entry again would index its
	// messages twice, so every later write refuses; OpenDispatcher
	// recovers from the last checkpoint.
	failed error
}

// OpenDispatcher opens the consume queues and index of l and recovers them
// up to the log's committed index (the owner calls l.SetCommitted first):
// every queue is cut back to its checkpointed end, then every committed
// entry after the checkpoint is replayed. Replay is idempotent because
// units are position-addressed by the queue offsets stamped in the batch.
func OpenDispatcher(l *Log, cfg DispatchConfig) (*Dispatcher, error) {
	if cfg.CheckpointEveryEntries <= 0 {
		cfg.CheckpointEveryEntries = 4096
	}
	d := &Dispatcher{log: l, fs: l.cfg.FS, dir: l.cfg.Dir, cfg: cfg}
	ck, err := readCheckpoint(d.fs, d.ckptName())
	if err == nil {
		if err = d.openStores(); err == nil {
			if err = d.behind(ck); err != nil {
				_ = d.Close()
			}
		}
	}
	if err != nil {
		// Nothing says how far the queues and the index can be trusted:
		// rebuild them both from the log.
		l.cfg.Logger.Warn("rebuilding consume queues and index from the log", "reason", err)
		for _, sub := range []string{"consumequeue", "index"} {
			if err := removeTree(d.fs, vfs.Join(d.dir, sub)); err != nil {
				return nil, err
			}
		}
		ck = checkpoint{}
		if err := d.openStores(); err != nil {
			return nil, err
		}
	}
	if err := d.recover(ck); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

// behind reports whether the stores on disk hold less than the checkpoint
// says they made durable: files were lost or deleted.
func (d *Dispatcher) behind(ck checkpoint) error {
	for q, next := range ck.next {
		lo, got, ok := d.cq.Range(q.Topic, q.Queue)
		if next > lo && (!ok || got < next) {
			return fmt.Errorf("consume queue %s ends at %d, checkpoint says %d", q, got, next)
		}
	}
	last, ok := d.idx.LastOffset()
	if ck.indexLast > 0 && (!ok || last+1 < ck.indexLast) {
		return fmt.Errorf("key index ends before offset %d", ck.indexLast-1)
	}
	return nil
}

func (d *Dispatcher) ckptName() string { return vfs.Join(d.dir, "dispatch.ckpt") }

func (d *Dispatcher) openStores() error {
	var err error
	d.cq, err = cq.Open(cq.Config{FS: d.fs, Dir: vfs.Join(d.dir, "consumequeue"),
		UnitsPerFile: d.cfg.UnitsPerQueueFile, Logger: d.log.cfg.Logger})
	if err != nil {
		return fmt.Errorf("log: consume queues: %w", err)
	}
	d.idx, err = index.Open(index.Config{FS: d.fs, Dir: vfs.Join(d.dir, "index"),
		SlotCount: d.cfg.IndexSlots, EntriesPerFile: d.cfg.IndexEntriesPerFile, Logger: d.log.cfg.Logger})
	if err != nil {
		_ = d.cq.Close()
		return fmt.Errorf("log: key index: %w", err)
	}
	return nil
}

func (d *Dispatcher) recover(ck checkpoint) error {
	start, end := d.log.StartOffset(), d.log.EndOffset()
	if err := d.cq.TruncateAbove(end); err != nil {
		return err
	}
	if err := d.cq.DeleteBefore(start); err != nil {
		return err
	}
	for _, q := range d.cq.Queues() {
		lo, next, _ := d.cq.Range(q.Topic, q.Queue)
		want := max(lo, min(next, ck.next[q]))
		if err := d.cq.TruncateQueue(q.Topic, q.Queue, want); err != nil {
			return err
		}
	}
	if err := d.idx.TruncateAbove(ck.end); err != nil {
		return err
	}
	if err := d.idx.DeleteBefore(start); err != nil {
		return err
	}
	first, _ := d.log.FirstIndex()
	d.index, d.end, d.ckpt = max(ck.index, first-1), ck.end, ck
	if err := d.DispatchTo(d.log.Committed()); err != nil {
		return err
	}
	return d.Checkpoint()
}

// DispatchTo dispatches every committed entry after the last dispatched one
// up to index hi.
func (d *Dispatcher) DispatchTo(hi uint64) error {
	if d.failed != nil {
		return d.refuse()
	}
	hi = min(hi, d.log.Committed(), d.log.DurableIndex())
	if hi <= d.index {
		return nil
	}
	return d.log.Scan(d.index+1, hi+1, d.Dispatch)
}

// Dispatch indexes one committed record; records must come in log order.
// Entries that are not message batches (conf changes, empty entries, other
// kinds) only move the dispatch position.
func (d *Dispatcher) Dispatch(r Record) error {
	if d.failed != nil {
		return d.refuse()
	}
	if r.Index != d.index+1 {
		return fmt.Errorf("log: dispatch of entry %d after %d", r.Index, d.index)
	}
	if r.Type == raftpb.EntryNormal && len(r.Data) >= batch.HeaderBytes {
		if err := d.dispatchBatch(r); err != nil {
			return d.fail(err)
		}
	}
	d.index, d.end = r.Index, r.Offset+uint64(align8(int64(len(r.Data))))
	if d.since++; d.since >= d.cfg.CheckpointEveryEntries {
		return d.Checkpoint()
	}
	return nil
}

func (d *Dispatcher) dispatchBatch(r Record) error {
	h, err := batch.ParseHeader(r.Data)
	if errors.Is(err, batch.ErrBadMagic) || err == nil && h.Kind != batch.KindMessages {
		return nil // not a message batch: someone else's entry
	}
	if err := d.it.Init(r.Data); err != nil {
		return fmt.Errorf("%w: entry %d: %w", ErrCorrupt, r.Index, err)
	}
	for d.it.Next() {
		v := d.it.View()
		phys := r.Offset + uint64(v.Pos())
		for _, dest := range v.Destinations {
			u := cq.Unit{PhysOffset: phys, Size: uint32(v.Len()), TagHash: dest.TagHash}
			if err := d.cq.Put(string(dest.Topic), dest.QueueID, dest.QueueOffset, u); err != nil {
				return fmt.Errorf("log: entry %d: %w", r.Index, err)
			}
		}
		if err := d.indexMessage(v, phys, h.StoreUnixMs); err != nil {
			return err
		}
	}
	if err := d.it.Err(); err != nil {
		return fmt.Errorf("%w: entry %d: %w", ErrCorrupt, r.Index, err)
	}
	return nil
}

// Index keys: "i" + the 16-byte id, and "k" + topic + NUL + key. The
// prefixes keep ids and keys apart; NUL cannot occur in a topic name.
func (d *Dispatcher) indexMessage(v batch.View, phys uint64, storeMs int64) error {
	id := v.ID()
	d.key = append(append(d.key[:0], 'i'), id[:]...)
	if err := d.idx.Add(d.key, phys, storeMs); err != nil {
		return fmt.Errorf("log: index id: %w", err)
	}
	for k := range v.Keys {
		d.key = keyIndexKey(d.key[:0], v.Topic(), k)
		if err := d.idx.Add(d.key, phys, storeMs); err != nil {
			return fmt.Errorf("log: index key: %w", err)
		}
	}
	return nil
}

func keyIndexKey(dst, topic, key []byte) []byte {
	dst = append(append(dst, 'k'), topic...)
	return append(append(dst, 0), key...)
}

// Checkpoint makes the queues and the index durable and records how far
// they reach, with every queue's end.
func (d *Dispatcher) Checkpoint() error {
	if d.failed != nil {
		return d.refuse()
	}
	if err := d.cq.Sync(); err != nil {
		return d.fail(err)
	}
	if err := d.idx.Sync(); err != nil {
		return d.fail(err)
	}
	ck := checkpoint{index: d.index, end: d.end, next: map[cq.QueueID]uint64{}}
	if last, ok := d.idx.LastOffset(); ok {
		ck.indexLast = last + 1
	}
	for _, q := range d.cq.Queues() {
		_, next, _ := d.cq.Range(q.Topic, q.Queue)
		ck.next[q] = next
	}
	// A checkpoint that could not be written leaves the previous one,
	// which is still true: the next Checkpoint may simply try again.
	if err := writeCheckpoint(d.fs, d.ckptName(), ck); err != nil {
		return err
	}
	d.ckpt, d.since = ck, 0
	return nil
}

func (d *Dispatcher) fail(err error) error {
	if d.failed == nil {
		d.failed = err
	}
	return err
}

func (d *Dispatcher) refuse() error {
	return fmt.Errorf("log: dispatcher unusable after a failed write, reopen to recover: %w", d.failed)
}

// Trim drops queue units and index entries that point below the log's
// first retained record (call after the log's retention removed segments).
func (d *Dispatcher) Trim() error {
	start := d.log.StartOffset()
	if err := d.cq.DeleteBefore(start); err != nil {
		return err
	}
	return d.idx.DeleteBefore(start)
}

// Reset discards the queues, the index and the checkpoint and starts over
// at the log's current start: for a follower whose log was reset to
// continue after a snapshot, where nothing below is kept.
func (d *Dispatcher) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.Close(); err != nil {
		return err
	}
	for _, sub := range []string{"consumequeue", "index"} {
		if err := removeTree(d.fs, vfs.Join(d.dir, sub)); err != nil {
			return err
		}
	}
	if err := d.fs.Remove(d.ckptName()); err != nil && !vfs.IsNotExist(err) {
		return err
	}
	if err := d.openStores(); err != nil {
		return err
	}
	first, _ := d.log.FirstIndex()
	d.index, d.end, d.since, d.failed = first-1, d.log.StartOffset(), 0, nil
	return d.Checkpoint()
}

// DispatchedIndex is the last entry dispatched.
func (d *Dispatcher) DispatchedIndex() uint64 { return d.index }

// Queues gives the consume queues to the goroutine that dispatches (the
// raft loop). Other goroutines use Range and Units, which are safe
// against a concurrent Reset.
func (d *Dispatcher) Queues() *cq.Store { return d.cq }

// Range returns a queue's first retained and next offsets.
func (d *Dispatcher) Range(topic string, queue uint32) (lo, next uint64, ok bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cq.Range(topic, queue)
}

// Units reads up to max consume-queue units of a queue from offset on.
func (d *Dispatcher) Units(topic string, queue uint32, offset uint64, max int) ([]cq.Unit, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cq.Get(topic, queue, offset, max, nil)
}

// Close closes the queues and the index (it does not checkpoint).
func (d *Dispatcher) Close() error {
	return errors.Join(d.cq.Close(), d.idx.Close())
}

// Message is one stored message read back from the log: the view aliases
// the log's mapping until Release.
type Message struct {
	batch.View
	PhysOffset uint64
	view       View
}

// Release lets the log unmap the bytes.
func (m Message) Release() { m.view.Release() }

// ReadMessage reads the message stored at physical offset phys.
func (d *Dispatcher) ReadMessage(phys uint64) (Message, error) {
	head, err := d.log.ReadAt(phys, 4)
	if err != nil {
		return Message{}, err
	}
	n := binary.LittleEndian.Uint32(head.Bytes)
	head.Release()
	if n > batch.MaxMessageBytes {
		return Message{}, fmt.Errorf("%w: message at %d claims %d bytes", ErrCorrupt, phys, n)
	}
	v, err := d.log.ReadAt(phys, int(n))
	if err != nil {
		return Message{}, err
	}
	_, mv, err := batch.DecodeMessage(v.Bytes)
	if err != nil {
		v.Release()
		return Message{}, fmt.Errorf("%w: message at %d: %w", ErrCorrupt, phys, err)
	}
	return Message{View: mv, PhysOffset: phys, view: v}, nil
}

// QueryByID finds the message with this id.
func (d *Dispatcher) QueryByID(id [16]byte) (Message, error) {
	key := append([]byte{'i'}, id[:]...)
	d.mu.RLock()
	offs, err := d.idx.Lookup(key, 0, 0, 16, nil)
	d.mu.RUnlock()
	if err != nil {
		return Message{}, err
	}
	for _, off := range offs {
		m, err := d.ReadMessage(off)
		if err != nil {
			continue // removed by retention, or a hash collision elsewhere
		}
		if m.ID() == id {
			return m, nil
		}
		m.Release()
	}
	return Message{}, ErrNotFound
}

// QueryByKey returns up to max messages of topic carrying key, newest first,
// stored within [beginMs, endMs] (0, 0: any time).
func (d *Dispatcher) QueryByKey(topic, key string, beginMs, endMs int64, max int) ([]Message, error) {
	k := keyIndexKey(nil, []byte(topic), []byte(key))
	d.mu.RLock()
	offs, err := d.idx.Lookup(k, beginMs, endMs, 4*max, nil)
	d.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	var out []Message
	for _, off := range offs {
		if len(out) == max {
			break
		}
		m, err := d.ReadMessage(off)
		if err != nil {
			continue
		}
		if bytes.Equal(m.Topic(), []byte(topic)) && hasKey(m.View, key) {
			out = append(out, m)
		} else {
			m.Release()
		}
	}
	return out, nil
}

func hasKey(v batch.View, key string) bool {
	for k := range v.Keys {
		if string(k) == key {
			return true
		}
	}
	return false
}

// ErrNotFound: no stored message matches.
var ErrNotFound = errors.New("log: message not found")

func removeTree(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil || len(names) == 0 {
		return err
	}
	for _, n := range names {
		p := vfs.Join(dir, n)
		if sub, _ := fs.List(p); len(sub) > 0 {
			if err := removeTree(fs, p); err != nil {
				return err
			}
			continue
		}
		if err := fs.Remove(p); err != nil && !vfs.IsNotExist(err) {
			// An empty directory: vfs has no rmdir, and an empty
			// directory is harmless to the stores.
			continue
		}
	}
	return fs.SyncDir(dir)
}
