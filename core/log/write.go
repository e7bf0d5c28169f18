package log

import (
	"fmt"
	"slices"
	"syscall"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Append writes entries after the log, first discarding any stored entries
// at or after ents[0].Index (a conflicting tail, as etcd raft requires).
// Entries at or below the compaction point are skipped, as MemoryStorage
// does. Nothing is durable until Sync.
func (l *Log) Append(ents []raftpb.Entry) error {
	if l.failed != nil {
		return l.failed
	}
	l.mu.RLock()
	compactIndex, last := l.mu.compactIndex, l.mu.last
	l.mu.RUnlock()
	for len(ents) > 0 && ents[0].Index <= compactIndex {
		ents = ents[1:]
	}
	if len(ents) == 0 {
		return nil
	}
	if err := l.checkAppend(ents, last); err != nil {
		return err
	}
	if ents[0].Index <= last {
		if err := l.truncateAfter(ents[0].Index - 1); err != nil {
			return err
		}
	}
	return l.write(ents)
}

func (l *Log) checkAppend(ents []raftpb.Entry, last uint64) error {
	if ents[0].Index > last+1 {
		return fmt.Errorf("log: append at index %d leaves a gap after last index %d", ents[0].Index, last)
	}
	for k, e := range ents {
		if k > 0 && e.Index != ents[k-1].Index+1 {
			return fmt.Errorf("log: appended entries not contiguous at index %d", e.Index)
		}
		if len(e.Data) > l.cfg.MaxEntryBytes {
			return fmt.Errorf("log: entry %d has %d bytes, over MaxEntryBytes %d", e.Index, len(e.Data), l.cfg.MaxEntryBytes)
		}
	}
	return nil
}

// write encodes the records into one buffer per touched segment and writes
// each buffer with a single pwrite.
func (l *Log) write(ents []raftpb.Entry) error {
	size := l.cfg.SegmentSizeBytes
	t := l.tail()
	start := t.end()
	buf := l.scratch[:0]
	var added []ent
	for _, e := range ents {
		rs := recordSize(len(e.Data))
		if start+int64(len(buf))+rs > size {
			if err := l.flush(t, start, buf, added); err != nil {
				return err
			}
			if err := l.roll(); err != nil {
				return err
			}
			t, start, buf, added = l.tail(), l.tail().end(), buf[:0], nil
		}
		pos := start + int64(len(buf))
		buf = slices.Grow(buf, int(rs))[:len(buf)+int(rs)]
		putRecord(buf[len(buf)-int(rs):], recHeader{entryType: uint8(e.Type), index: e.Index, term: e.Term}, e.Data)
		added = append(added, ent{pos: uint32(pos), length: uint32(len(e.Data)), term: e.Term})
	}
	err := l.flush(t, start, buf, added)
	l.scratch = buf[:0]
	return err
}

// flush writes buf at position start of segment t and publishes its entries.
func (l *Log) flush(t *segment, start int64, buf []byte, added []ent) error {
	if len(buf) == 0 {
		return nil
	}
	if _, err := t.f.WriteAt(buf, start); err != nil {
		return fmt.Errorf("log: write %s at %d: %w", t.name, start, err)
	}
	t.dirty = true
	l.mu.Lock()
	t.ents = append(t.ents, added...)
	l.mu.last = t.lastIndex()
	l.mu.Unlock()
	return nil
}

// Sync makes every appended entry durable with one fdatasync per written
// segment (normally one). A failed sync is fatal for this Log: the kernel may
// have dropped the dirty pages, so retrying could report success for data
// that is gone (the fsyncgate lesson).
func (l *Log) Sync() error {
	if l.failed != nil {
		return l.failed
	}
	for _, s := range l.mu.segs { // the writer owns the list; no lock needed to read it
		if !s.dirty {
			continue
		}
		if err := s.f.Sync(); err != nil {
			l.failed = fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.name, err)
			return l.failed
		}
		s.dirty = false
	}
	l.durable.Store(l.mu.last)
	l.updateReadableEnd()
	return nil
}

// roll seals the tail and starts the next segment.
func (l *Log) roll() error {
	t := l.tail()
	if err := l.seal(t); err != nil {
		return err
	}
	prevTerm := t.hdr.prevTerm
	if len(t.ents) > 0 {
		prevTerm = t.ents[len(t.ents)-1].term
	}
	return l.createSegment(t.hdr.base+uint64(l.cfg.SegmentSizeBytes), SegmentHeaderBytes, t.lastIndex()+1, prevTerm)
}

// seal syncs a full segment and writes its .idx. The directory sync that
// makes the .idx name durable is done by the createSegment that follows.
func (l *Log) seal(s *segment) error {
	if err := s.f.Sync(); err != nil {
		l.failed = fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.name, err)
		return l.failed
	}
	s.dirty = false
	l.durable.Store(max(l.durable.Load(), s.lastIndex()))
	if err := l.writeIdx(s); err != nil {
		return err
	}
	l.mu.Lock()
	s.sealed = true
	l.mu.Unlock()
	return nil
}

func (l *Log) writeIdx(s *segment) error {
	return replaceFile(l.cfg.FS, idxName(l.dir, s.hdr.base), encodeIdx(s.hdr.first, s.ents))
}

// replaceFile writes data to name through a synced temporary file that is
// renamed over it, so a crash leaves the old file or the new one. The
// caller syncs the directory. A temporary file that a failure leaves is
// removed at once: on a full disk its blocks are wanted back now.
func replaceFile(fs vfs.FS, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("log: create %s: %w", tmp, err)
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		err = fmt.Errorf("log: write %s: %w", tmp, err)
	} else if err = fs.Rename(tmp, name); err != nil {
		err = fmt.Errorf("log: rename %s: %w", tmp, err)
	}
	if err != nil {
		_ = fs.Remove(tmp) // best effort: Open removes leftovers too
	}
	return err
}

// createSegment makes a new, empty tail segment whose first record will be
// entry first at position start. The file is preallocated and its header is
// durable, with its name, before any record goes in.
func (l *Log) createSegment(base, start, first, prevTerm uint64) error {
	size := l.cfg.SegmentSizeBytes
	name := segName(l.dir, base)
	// Never start a preallocation there is no room for: it would fail
	// part-way, and the raft loop retries it at every tick.
	if sr, ok := l.cfg.FS.(vfs.SpaceReporter); ok {
		if free, err := sr.FreeBytes(l.dir); err == nil && free < uint64(size) {
			return fmt.Errorf("log: create %s: %d bytes free, a segment needs %d: %w", name, free, size, syscall.ENOSPC)
		}
	}
	f, err := l.cfg.FS.Create(name)
	if err != nil {
		return fmt.Errorf("log: create %s: %w", name, err)
	}
	s := &segment{name: name, f: f, hdr: segHeader{
		base: base, size: uint64(size), first: first, prevTerm: prevTerm,
		createdUnixMs: l.cfg.Now().UnixMilli(), start: start,
	}}
	if err := l.initSegment(s); err != nil {
		_ = f.Close()
		// A failed preallocation can keep the blocks it got: give them
		// back now, not at the next start (recovery removes the file too).
		if rerr := l.cfg.FS.Remove(name); rerr != nil && !isNotExist(rerr) {
			l.cfg.Logger.Warn("cannot remove a segment whose creation failed", "file", name, "err", rerr)
		}
		return err
	}
	s.refs.Store(1) // the list's reference
	l.mu.Lock()
	l.mu.segs = append(l.mu.segs, s)
	l.mu.Unlock()
	return nil
}

func (l *Log) initSegment(s *segment) error {
	size := l.cfg.SegmentSizeBytes
	if err := s.f.Preallocate(size); err != nil {
		return fmt.Errorf("log: preallocate %s: %w", s.name, err)
	}
	var hdr [SegmentHeaderBytes]byte
	s.hdr.encode(hdr[:])
	if _, err := s.f.WriteAt(hdr[:], 0); err != nil {
		return fmt.Errorf("log: write header of %s: %w", s.name, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("log: sync %s: %w", s.name, err)
	}
	if err := l.cfg.FS.SyncDir(l.dir); err != nil {
		return fmt.Errorf("log: sync dir %s: %w", l.dir, err)
	}
	data, unmap, err := s.f.MapReadOnly(size)
	if err != nil {
		return err
	}
	s.data, s.unmap = data, unmap
	return nil
}

// truncateAfter discards every entry after index i. The write position goes
// back to just after entry i, in the segment that holds it, so the next
// records land where any other replica with the same entries has them.
func (l *Log) truncateAfter(i uint64) error {
	if i < l.committed.Load() {
		return fmt.Errorf("log: refusing to truncate after %d below the commit index %d", i, l.committed.Load())
	}
	l.mu.RLock()
	k := len(l.mu.segs) - 1
	for k > 0 && l.mu.segs[k].hdr.first > i {
		k--
	}
	keep := l.mu.segs[k]
	later := append([]*segment(nil), l.mu.segs[k+1:]...)
	l.mu.RUnlock()

	if err := l.removeSegments(later, true); err != nil {
		return err
	}
	if keep.sealed {
		// The .idx describes the old contents; it must be gone before
		// the segment changes, or a crash could pair the two. It may be
		// gone already: a retry after the directory sync below failed.
		if err := l.cfg.FS.Remove(idxName(l.dir, keep.hdr.base)); err != nil && !isNotExist(err) {
			return fmt.Errorf("log: unseal %s: %w", keep.name, err)
		}
		if err := l.cfg.FS.SyncDir(l.dir); err != nil {
			return fmt.Errorf("log: unseal %s: sync dir: %w", keep.name, err)
		}
	}
	n := int(i + 1 - keep.hdr.first)
	oldEnd := keep.end()
	l.mu.Lock()
	keep.sealed = false
	keep.ents = keep.ents[:n]
	l.mu.last = i
	l.mu.Unlock()
	l.durable.Store(min(l.durable.Load(), i))
	// Zero the stale records so no recovery can ever bring them back.
	if err := l.zero(keep, keep.end(), oldEnd); err != nil {
		return err
	}
	return nil
}

// zero overwrites [from, to) of s with zeros and syncs.
func (l *Log) zero(s *segment, from, to int64) error {
	if from >= to {
		return nil
	}
	zeros := make([]byte, min(to-from, 1<<20))
	for p := from; p < to; p += int64(len(zeros)) {
		n := min(int64(len(zeros)), to-p)
		if _, err := s.f.WriteAt(zeros[:n], p); err != nil {
			return fmt.Errorf("log: zero %s at %d: %w", s.name, p, err)
		}
	}
	if err := s.f.Sync(); err != nil {
		l.failed = fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.name, err)
		return l.failed
	}
	return nil
}

// removeSegments unlinks segs (the newest ones when fromTail, else the oldest)
// and retires their mappings.
func (l *Log) removeSegments(segs []*segment, fromTail bool) error {
	if len(segs) == 0 {
		return nil
	}
	l.mu.Lock()
	if fromTail {
		l.mu.segs = l.mu.segs[:len(l.mu.segs)-len(segs)]
	} else {
		l.mu.segs = append([]*segment(nil), l.mu.segs[len(segs):]...)
	}
	l.mu.retired = append(l.mu.retired, segs...)
	l.mu.Unlock()
	for _, s := range segs {
		s.release() // the list's reference
		if err := l.cfg.FS.Remove(s.name); err != nil {
			return fmt.Errorf("log: remove %s: %w", s.name, err)
		}
		if err := l.cfg.FS.Remove(idxName(l.dir, s.hdr.base)); err != nil && !isNotExist(err) {
			return fmt.Errorf("log: remove idx of %s: %w", s.name, err)
		}
	}
	return l.cfg.FS.SyncDir(l.dir)
}

// CompactTo discards entries up to and including i, as raft's
// MemoryStorage.Compact does: FirstIndex becomes i+1 and Term(i) stays
// known. Whole segments below i are deleted; entries of the segment that
// holds i stay on disk until the whole segment can go.
func (l *Log) CompactTo(i uint64) error {
	l.mu.RLock()
	compactIndex, last := l.mu.compactIndex, l.mu.last
	l.mu.RUnlock()
	if i <= compactIndex {
		return ErrCompacted
	}
	if i > last {
		return fmt.Errorf("log: compact to %d beyond last index %d: %w", i, last, ErrUnavailable)
	}
	term, err := l.Term(i)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.mu.compactIndex, l.mu.compactTerm = i, term
	var gone []*segment
	for _, s := range l.mu.segs[:len(l.mu.segs)-1] {
		if s.lastIndex() > i {
			break
		}
		gone = append(gone, s)
	}
	l.mu.Unlock()
	if err := l.removeSegments(gone, false); err != nil {
		return err
	}
	l.unmapRetired()
	return nil
}

// RetentionPoint is where ApplyRetention(limit) would compact to now: the
// index of the last entry it would delete, that entry's term, and the log
// offset where the entry after it is stored. ok is false if nothing would
// be deleted. The owner saves a snapshot there before calling
// ApplyRetention(index).
func (l *Log) RetentionPoint(limit uint64) (index, term, nextOffset uint64, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := l.retainableLocked(limit)
	if n == 0 {
		return 0, 0, 0, false
	}
	kept := l.mu.segs[n].hdr
	return kept.first - 1, kept.prevTerm, kept.base + kept.start, true
}

// retainableLocked counts the oldest sealed segments that are over the size
// or age limit and hold nothing above limit.
func (l *Log) retainableLocked(limit uint64) int {
	now := l.cfg.Now()
	segs := l.mu.segs
	total := int64(len(segs)) * l.cfg.SegmentSizeBytes
	n := 0
	for ; n < len(segs)-1; n++ {
		s, next := segs[n], segs[n+1]
		// A segment was sealed when its successor was created: that is
		// when its newest data was written.
		sealedAt := time.UnixMilli(next.hdr.createdUnixMs)
		tooBig := total > l.cfg.RetentionBytes
		tooOld := now.Sub(sealedAt) > l.cfg.RetentionAge
		if !(tooBig || tooOld) || s.lastIndex() > limit {
			break
		}
		total -= l.cfg.SegmentSizeBytes
	}
	return n
}

// ApplyRetention deletes the oldest sealed segments while the log is larger
// than RetentionBytes or their newest data is older than RetentionAge, but
// never a segment holding an entry above limit (the owner passes the lowest
// index it still needs: applied, dispatched, wanted by followers). It returns
// the new first index.
func (l *Log) ApplyRetention(limit uint64) (uint64, error) {
	l.mu.RLock()
	n := l.retainableLocked(limit)
	gone := append([]*segment(nil), l.mu.segs[:n]...)
	l.mu.RUnlock()
	if n == 0 {
		l.unmapRetired()
		return l.FirstIndex()
	}
	l.mu.Lock()
	// The first kept segment's header knows the index and term before it,
	// even when the last removed segment holds no entry.
	kept := l.mu.segs[n].hdr
	if kept.first-1 > l.mu.compactIndex {
		l.mu.compactIndex, l.mu.compactTerm = kept.first-1, kept.prevTerm
	}
	l.mu.Unlock()
	l.cfg.Logger.Info("retention removes segments", "count", n, "through_index", kept.first-1, "bytes", int64(n)*l.cfg.SegmentSizeBytes)
	if err := l.removeSegments(gone, false); err != nil {
		return 0, err
	}
	l.unmapRetired()
	return l.FirstIndex()
}

// Reset discards the whole log and continues after a snapshot: the next
// entry is index+1, its predecessor has term, and its record goes at log
// offset nextOffset (where the leader has it), keeping offsets identical
// across replicas.
func (l *Log) Reset(index, term, nextOffset uint64) error {
	size := uint64(l.cfg.SegmentSizeBytes)
	base, start := nextOffset/size*size, nextOffset%size
	if start < SegmentHeaderBytes || start%8 != 0 {
		return fmt.Errorf("log: reset to offset %d: not a record position", nextOffset)
	}
	if index < l.committed.Load() {
		return fmt.Errorf("log: reset to %d below the commit index %d", index, l.committed.Load())
	}
	l.mu.RLock()
	old := append([]*segment(nil), l.mu.segs...)
	l.mu.RUnlock()
	if err := l.removeSegments(old, true); err != nil {
		return err
	}
	if err := l.createSegment(base, start, index+1, term); err != nil {
		return err
	}
	l.mu.Lock()
	l.mu.compactIndex, l.mu.compactTerm, l.mu.last = index, term, index
	l.mu.Unlock()
	l.durable.Store(index)
	l.committed.Store(index)
	l.readableEnd.Store(nextOffset)
	l.unmapRetired()
	return nil
}

// unmapRetired unmaps removed segments that no reader holds any more.
func (l *Log) unmapRetired() {
	l.mu.Lock()
	keep := l.mu.retired[:0]
	var done []*segment
	for _, s := range l.mu.retired {
		if s.refs.Load() == 0 {
			done = append(done, s)
		} else {
			keep = append(keep, s)
		}
	}
	l.mu.retired = keep
	l.mu.Unlock()
	for _, s := range done {
		l.closeSegment(s)
	}
}

func (l *Log) closeSegment(s *segment) {
	if s.unmap != nil {
		if err := s.unmap(); err != nil {
			l.cfg.Logger.Warn("unmap segment", "file", s.name, "err", err)
		}
	}
	if err := s.f.Close(); err != nil {
		l.cfg.Logger.Warn("close segment", "file", s.name, "err", err)
	}
}

func (l *Log) closeSegments() {
	for _, s := range l.mu.segs {
		l.closeSegment(s)
	}
	l.mu.segs = nil
}

// Close releases every file and mapping. It does not sync: the owner calls
// Sync first if it wants the tail durable. Views still held become invalid.
func (l *Log) Close() error {
	if l.failed == ErrClosed {
		return ErrClosed
	}
	l.mu.Lock()
	segs, retired := l.mu.segs, l.mu.retired
	l.mu.segs, l.mu.retired = nil, nil
	l.mu.Unlock()
	for _, s := range segs {
		s.release() // the list's reference
	}
	for _, s := range append(segs, retired...) {
		if s.refs.Load() > 0 {
			// A reader still holds bytes of it: unmapping now would crash
			// that reader. Leave the mapping to the process's exit.
			l.cfg.Logger.Warn("segment still read at close; leaving it mapped", "file", s.name)
			continue
		}
		l.closeSegment(s)
	}
	l.failed = ErrClosed
	return nil
}
