package log

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/raft/v3"
	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Errors callers branch on. ErrCompacted and ErrUnavailable are etcd raft's
// own values, so raft reacts to them as it does for MemoryStorage.
var (
	ErrCompacted   = raft.ErrCompacted
	ErrUnavailable = raft.ErrUnavailable
	// ErrNotReadable: the requested bytes are not (yet, or any more) in the
	// committed, durable part of the log.
	ErrNotReadable = errors.New("log: offset not readable")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("log: closed")
	// ErrSyncFailed: an fsync failed, so this Log refuses every further
	// write (the page cache may have dropped the data); reopen it.
	ErrSyncFailed = errors.New("log: sync failed")
)

// Log is the segmented commit log. See doc.go for the format and the rules.
type Log struct {
	cfg Config
	dir string

	// mu guards the segment list, each segment's ents and sealed flag, the
	// compaction point and last. The writer holds it only to publish
	// changes, never across I/O; readers hold it to locate bytes.
	mu struct {
		sync.RWMutex
		segs         []*segment
		compactIndex uint64 // entries ≤ compactIndex are gone; FirstIndex = compactIndex+1
		compactTerm  uint64
		last         uint64
		retired      []*segment // removed from segs, unmapped once unreferenced
	}
	durable     atomic.Uint64 // every entry ≤ durable is fdatasynced
	committed   atomic.Uint64 // set by the owner; entries ≤ min(committed, durable) are immutable
	readableEnd atomic.Uint64 // log offset just past the last immutable record

	// Writer-only state.
	scratch []byte
	failed  error // sticky: after a failed sync the page cache state is unknown
}

type segment struct {
	hdr    segHeader
	name   string
	f      vfs.File
	data   []byte // read-only shared mapping of the whole file
	unmap  func() error
	ents   []ent // guarded by Log.mu
	sealed bool  // guarded by Log.mu
	dirty  bool  // writer only: written since the last sync
	refs   atomic.Int64
}

// lastIndex is the index of the segment's last entry, first-1 when empty.
func (s *segment) lastIndex() uint64 { return s.hdr.first + uint64(len(s.ents)) - 1 }

// end is the write position: just past the last record.
func (s *segment) end() int64 {
	if len(s.ents) == 0 {
		return int64(s.hdr.start)
	}
	return s.ents[len(s.ents)-1].end()
}

func (s *segment) release() {
	if s.refs.Add(-1) < 0 {
		panic("log: segment released more often than acquired")
	}
}

func segName(dir string, base uint64) string { return vfs.Join(dir, fmt.Sprintf("%020d.seg", base)) }
func idxName(dir string, base uint64) string { return vfs.Join(dir, fmt.Sprintf("%020d.idx", base)) }

// Open opens the log in cfg.Dir, creating it if needed, and recovers it.
func Open(cfg Config) (*Log, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, dir: vfs.Join(cfg.Dir, "commitlog")}
	if err := cfg.FS.MkdirAll(l.dir); err != nil {
		return nil, fmt.Errorf("log: create %s: %w", l.dir, err)
	}
	if err := l.recover(); err != nil {
		l.closeSegments()
		return nil, err
	}
	if len(l.mu.segs) == 0 {
		if err := l.createSegment(0, SegmentHeaderBytes, 1, 0); err != nil {
			return nil, err
		}
	}
	first := l.mu.segs[0]
	l.mu.compactIndex, l.mu.compactTerm = first.hdr.first-1, first.hdr.prevTerm
	l.mu.last = l.tail().lastIndex()
	l.durable.Store(l.mu.last)
	l.readableEnd.Store(first.hdr.base + first.hdr.start)
	return l, nil
}

func (l *Log) tail() *segment { return l.mu.segs[len(l.mu.segs)-1] }

// FirstIndex implements raft.Storage.
func (l *Log) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.compactIndex + 1, nil
}

// LastIndex implements raft.Storage.
func (l *Log) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.last, nil
}

// DurableIndex is the last index made durable by Sync.
func (l *Log) DurableIndex() uint64 { return l.durable.Load() }

// segmentOf returns the segment that holds (or would hold) index i. Callers
// hold mu and have checked compactIndex < i ≤ last.
func (l *Log) segmentOf(i uint64) *segment {
	segs := l.mu.segs
	k := sort.Search(len(segs), func(k int) bool { return segs[k].hdr.first > i }) - 1
	return segs[max(k, 0)]
}

// Term implements raft.Storage.
func (l *Log) Term(i uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case i < l.mu.compactIndex:
		return 0, ErrCompacted
	case i == l.mu.compactIndex:
		return l.mu.compactTerm, nil
	case i > l.mu.last:
		return 0, ErrUnavailable
	}
	s := l.segmentOf(i)
	return s.ents[i-s.hdr.first].term, nil
}

// Entries implements raft.Storage: [lo, hi) up to maxSize bytes (by
// Entry.Size), always at least one entry. Data of immutable entries aliases
// the mapping; the rest is copied (see doc.go).
func (l *Log) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if lo <= l.mu.compactIndex {
		return nil, ErrCompacted
	}
	if hi > l.mu.last+1 || lo > hi {
		return nil, fmt.Errorf("log: entries [%d, %d) outside [%d, %d]: %w", lo, hi, l.mu.compactIndex+1, l.mu.last, ErrUnavailable)
	}
	if l.mu.last == l.mu.compactIndex {
		return nil, ErrUnavailable
	}
	immutable := min(l.committed.Load(), l.durable.Load())
	out := make([]raftpb.Entry, 0, min(hi-lo, 256))
	var size uint64
	for i := lo; i < hi; i++ {
		e, err := l.entryLocked(i, i <= immutable)
		if err != nil {
			return nil, err
		}
		size += uint64(e.Size())
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// entryLocked reads entry i, checking its CRC: a sealed segment is trusted
// through its .idx, so this is where damage in synced data shows up.
func (l *Log) entryLocked(i uint64, alias bool) (raftpb.Entry, error) {
	s := l.segmentOf(i)
	e := s.ents[i-s.hdr.first]
	rec := s.data[e.pos : int64(e.pos)+RecordHeaderBytes+int64(e.length)]
	if got, want := crc32.Checksum(rec[8:], castagnoli), leUint32(rec[4:]); got != want {
		return raftpb.Entry{}, fmt.Errorf("%w: entry %d in %s at %d: crc %08x, want %08x", ErrCorrupt, i, s.name, e.pos, got, want)
	}
	data := rec[RecordHeaderBytes:len(rec):len(rec)]
	if !alias {
		data = append([]byte(nil), data...)
	}
	if len(data) == 0 {
		data = nil // raft's MemoryStorage returns nil Data for empty entries
	}
	return raftpb.Entry{Term: e.term, Index: i, Type: raftpb.EntryType(rec[3]), Data: data}, nil
}

// Record is one entry as the dispatcher sees it.
type Record struct {
	Index, Term uint64
	Type        raftpb.EntryType
	// Offset is the log offset of the record's first data byte. A message
	// at position p of a batch has log offset Offset+p.
	Offset uint64
	// Data aliases the mapping; it is valid only during the callback.
	Data []byte
}

// Scan calls fn for each entry in [lo, hi), which must be immutable
// (committed and durable). It stops at fn's first error and returns it.
func (l *Log) Scan(lo, hi uint64, fn func(Record) error) error {
	for i := lo; i < hi; i++ {
		rec, s, err := l.acquireRecord(i)
		if err != nil {
			return err
		}
		err = fn(rec)
		s.release()
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) acquireRecord(i uint64) (Record, *segment, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.mu.segs) == 0 {
		return Record{}, nil, ErrClosed
	}
	if i <= l.mu.compactIndex {
		return Record{}, nil, fmt.Errorf("log: scan entry %d: %w", i, ErrCompacted)
	}
	if i > min(l.committed.Load(), l.durable.Load()) || i > l.mu.last {
		return Record{}, nil, fmt.Errorf("log: scan entry %d beyond the immutable log: %w", i, ErrUnavailable)
	}
	e, err := l.entryLocked(i, true)
	if err != nil {
		return Record{}, nil, err
	}
	s := l.segmentOf(i)
	s.refs.Add(1)
	pos := s.ents[i-s.hdr.first].pos
	return Record{
		Index: i, Term: e.Term, Type: e.Type, Data: e.Data,
		Offset: s.hdr.base + uint64(pos) + RecordHeaderBytes,
	}, s, nil
}

// View is a zero-copy window into the log. Release it when done; the bytes
// must not be used after.
type View struct {
	Bytes []byte
	seg   *segment
}

// Release lets the log unmap the segment once nobody reads it.
func (v View) Release() {
	if v.seg != nil {
		v.seg.release()
	}
}

// ReadAt returns n bytes at log offset off without copying. The range must
// lie inside one segment and inside the immutable part of the log.
func (l *Log) ReadAt(off uint64, n int) (View, error) {
	if n < 0 || off+uint64(n) > l.readableEnd.Load() {
		return View{}, fmt.Errorf("log: read %d bytes at %d (readable end %d): %w", n, off, l.readableEnd.Load(), ErrNotReadable)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	segs := l.mu.segs
	if len(segs) == 0 {
		return View{}, ErrClosed
	}
	size := uint64(l.cfg.SegmentSizeBytes)
	first := segs[0]
	if off < first.hdr.base+first.hdr.start {
		return View{}, fmt.Errorf("log: offset %d was removed (log starts at %d): %w", off, first.hdr.base+first.hdr.start, ErrNotReadable)
	}
	k := (off - first.hdr.base) / size
	if k >= uint64(len(segs)) {
		return View{}, fmt.Errorf("log: offset %d past the last segment: %w", off, ErrNotReadable)
	}
	s := segs[k]
	pos := off - s.hdr.base
	if pos < s.hdr.start || pos+uint64(n) > size {
		return View{}, fmt.Errorf("log: read %d bytes at %d crosses a segment boundary: %w", n, off, ErrNotReadable)
	}
	s.refs.Add(1)
	return View{Bytes: s.data[pos : pos+uint64(n) : pos+uint64(n)], seg: s}, nil
}

// SetCommitted tells the log that entries ≤ i are committed: they will
// never be truncated, so they can be read without copying once durable.
func (l *Log) SetCommitted(i uint64) {
	if i > l.committed.Load() {
		l.committed.Store(i)
		l.updateReadableEnd()
	}
}

// Committed returns the index last given to SetCommitted.
func (l *Log) Committed() uint64 { return l.committed.Load() }

func (l *Log) updateReadableEnd() {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := min(l.committed.Load(), l.durable.Load(), l.mu.last)
	if i <= l.mu.compactIndex {
		return
	}
	s := l.segmentOf(i)
	l.readableEnd.Store(s.hdr.base + uint64(s.ents[i-s.hdr.first].end()))
}

// EndOffset is the log offset where the next record would go if it fits in
// the tail segment.
func (l *Log) EndOffset() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	t := l.tail()
	return t.hdr.base + uint64(t.end())
}

// DataOffset is the log offset of entry i's data: a message at position p
// of the batch in entry i has physical offset DataOffset(i)+p.
func (l *Log) DataOffset(i uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i < l.mu.segs[0].hdr.first || i > l.mu.last {
		return 0, fmt.Errorf("log: data offset of %d: not stored: %w", i, ErrUnavailable)
	}
	s := l.segmentOf(i)
	return s.hdr.base + uint64(s.ents[i-s.hdr.first].pos) + RecordHeaderBytes, nil
}

// DiskBytes is the space the segments take (they are preallocated).
func (l *Log) DiskBytes() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return int64(len(l.mu.segs)) * l.cfg.SegmentSizeBytes
}

// StartOffset is the log offset of the first record still stored.
func (l *Log) StartOffset() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s := l.mu.segs[0]
	return s.hdr.base + s.hdr.start
}

func leUint32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// parseSegName returns the base of a segment file name.
func parseBase(name, ext string) (uint64, bool) {
	stem, ok := strings.CutSuffix(name, ext)
	if !ok || len(stem) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(stem, 10, 64)
	return v, err == nil
}
