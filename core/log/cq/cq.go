package cq

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// UnitBytes is the size of one unit on disk (RocketMQ's CQ_STORE_UNIT_SIZE).
const UnitBytes = 20

// Errors callers branch on. They are returned wrapped; test with errors.Is.
var (
	// ErrOffsetTooSmall: the queue offset is below the queue's min (deleted
	// by retention, or never there).
	ErrOffsetTooSmall = errors.New("cq: queue offset below the queue's min")
	// ErrOffsetTooLarge: the queue offset is past the queue's next (Get), or
	// would leave too big a gap or overflow (Put).
	ErrOffsetTooLarge = errors.New("cq: queue offset too large")
	// ErrUnknownQueue: no unit was ever put to this (topic, queue).
	ErrUnknownQueue = errors.New("cq: unknown queue")
	// ErrBadTopic: the topic is not a safe single path component.
	ErrBadTopic = errors.New("cq: bad topic name")
	// ErrZeroPhysOffset: a unit's physical offset is 0, which marks a hole.
	ErrZeroPhysOffset = errors.New("cq: unit with physical offset 0")
	// ErrCorrupt: the files on disk do not follow the format (see doc.go).
	ErrCorrupt = errors.New("cq: corrupt consume queue")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("cq: store closed")
)

// Unit says where one message of a queue sits in the commit log.
type Unit struct {
	PhysOffset uint64 // log offset of the message; 0 never names a message
	Size       uint32 // message length in bytes
	TagHash    int64  // hash of the message tag
}

func (u Unit) encodeTo(b []byte) {
	_ = b[UnitBytes-1]
	binary.LittleEndian.PutUint64(b[0:8], u.PhysOffset)
	binary.LittleEndian.PutUint32(b[8:12], u.Size)
	binary.LittleEndian.PutUint64(b[12:20], uint64(u.TagHash))
}

func decodeUnit(b []byte) Unit {
	_ = b[UnitBytes-1]
	return Unit{
		PhysOffset: binary.LittleEndian.Uint64(b[0:8]),
		Size:       binary.LittleEndian.Uint32(b[8:12]),
		TagHash:    int64(binary.LittleEndian.Uint64(b[12:20])),
	}
}

// QueueID names a consume queue.
type QueueID struct {
	Topic string
	Queue uint32
}

func (id QueueID) String() string { return fmt.Sprintf("%s/%d", id.Topic, id.Queue) }

func compareIDs(a, b QueueID) int {
	return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Queue, b.Queue))
}

// Store holds every consume queue under one directory. See the package
// documentation for the format and the concurrency contract: one writer
// goroutine (Put, Sync, TruncateAbove, TruncateQueue, DeleteBefore, Close)
// and any number of concurrent readers (Get, Range, Queues).
type Store struct {
	cfg       Config
	upf       uint64 // units per file
	fileBytes int64
	// maxOffset is the first queue offset Put refuses, far enough below
	// 2^64 that no file end or next overflows.
	maxOffset uint64

	mu struct {
		sync.RWMutex
		// queues is changed under the write lock; the writer, being the
		// only one that changes it, may read it without the lock.
		queues map[QueueID]*queue
		closed bool
	}

	// Owned by the writer goroutine; no lock.
	dirty     []*segment          // files written since the last Sync, each once
	dirtyDirs map[string]struct{} // directories whose entries changed since then
	unitBuf   [UnitBytes]byte     // Put's encoding buffer: a local would escape to the heap
}

// queue is one consume queue.
type queue struct {
	id  QueueID
	dir string
	// files and min change under Store.mu's write lock, by the writer only;
	// readers read them under the read lock.
	files []*segment
	min   uint64
	// next is stored by the writer after it has written the units below it,
	// so a reader that loads next may read every unit below it.
	next atomic.Uint64
}

// segment is one mapped file of a queue.
type segment struct {
	first uint64
	name  string
	f     vfs.File
	data  []byte // the read-only mapping, fileBytes long
	unmap func() error
	// Writer-only.
	dirty   bool // in Store.dirty
	removed bool // closed and unmapped
}

func newStore(cfg Config) *Store {
	s := &Store{
		cfg:       cfg,
		upf:       uint64(cfg.UnitsPerFile),
		fileBytes: int64(cfg.UnitsPerFile) * UnitBytes,
		dirtyDirs: map[string]struct{}{},
	}
	s.maxOffset = (math.MaxUint64/s.upf - 2) * s.upf
	s.mu.queues = map[QueueID]*queue{}
	return s
}

// unitAt decodes unit k of q; k must lie within q's files.
func (s *Store) unitAt(q *queue, k uint64) Unit {
	seg := q.files[(k-q.files[0].first)/s.upf]
	pos := (k - seg.first) * UnitBytes
	return decodeUnit(seg.data[pos : pos+UnitBytes])
}

// Get appends to dst up to maxUnits units of the queue, starting at offset,
// and returns the extended slice. It stops at next, and also before a hole
// (a unit never written, which only a crash leaves below next), so it never
// returns a unit with PhysOffset 0. offset == next gives no units and no
// error; offset below min is ErrOffsetTooSmall and above next is
// ErrOffsetTooLarge.
func (s *Store) Get(topic string, queue uint32, offset uint64, maxUnits int, dst []Unit) ([]Unit, error) {
	if err := checkTopic(topic); err != nil {
		return dst, err
	}
	id := QueueID{Topic: topic, Queue: queue}
	// Units are copied out under the read lock: a writer that rewrites a
	// unit below next, or unmaps a file, takes the write lock first.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mu.closed {
		return dst, ErrClosed
	}
	q := s.mu.queues[id]
	if q == nil {
		return dst, fmt.Errorf("%w: %s", ErrUnknownQueue, id)
	}
	next := q.next.Load()
	switch {
	case offset < q.min:
		return dst, fmt.Errorf("%w: %s offset %d, min %d", ErrOffsetTooSmall, id, offset, q.min)
	case offset > next:
		return dst, fmt.Errorf("%w: %s offset %d, next %d", ErrOffsetTooLarge, id, offset, next)
	}
	end := offset + min(uint64(max(maxUnits, 0)), next-offset)
	for k := offset; k < end; k++ {
		u := s.unitAt(q, k)
		if u.PhysOffset == 0 {
			break
		}
		dst = append(dst, u)
	}
	return dst, nil
}

// Range reports the queue's min (its first readable offset) and next (one
// past its last unit); ok is false for a queue that does not exist.
func (s *Store) Range(topic string, queue uint32) (min, next uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	q := s.mu.queues[QueueID{Topic: topic, Queue: queue}]
	if s.mu.closed || q == nil {
		return 0, 0, false
	}
	return q.min, q.next.Load(), true
}

// Queues lists every queue, sorted by topic and then queue id.
func (s *Store) Queues() []QueueID {
	s.mu.RLock()
	ids := make([]QueueID, 0, len(s.mu.queues))
	for id := range s.mu.queues {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	slices.SortFunc(ids, compareIDs)
	return ids
}

// sortedQueues is the writer's view of every queue, in a fixed order so that
// its effects (and logs) are deterministic.
func (s *Store) sortedQueues() []*queue {
	qs := make([]*queue, 0, len(s.mu.queues))
	for _, q := range s.mu.queues {
		qs = append(qs, q)
	}
	slices.SortFunc(qs, func(a, b *queue) int { return compareIDs(a.id, b.id) })
	return qs
}

// Close unmaps and closes every file. It does not Sync: call Sync first to
// make the last writes durable.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.mu.closed = true
	queues := s.mu.queues
	s.mu.queues = nil
	s.mu.Unlock()
	// No reader can reach a file any more: each checks closed first.
	var errs []error
	for _, q := range queues {
		for _, seg := range q.files {
			errs = append(errs, seg.close())
		}
	}
	return errors.Join(errs...)
}

// close unmaps and closes the file. Callers make sure no reader can still
// hold the mapping.
func (seg *segment) close() error {
	seg.removed = true
	uerr := seg.unmap()
	cerr := seg.f.Close()
	if err := errors.Join(uerr, cerr); err != nil {
		return fmt.Errorf("cq: close %s: %w", seg.name, err)
	}
	return nil
}
