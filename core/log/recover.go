package log

import (
	"errors"
	"fmt"
	"strings"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

func isNotExist(err error) bool { return vfs.IsNotExist(err) }

// recover loads every segment, validating as doc.go describes.
func (l *Log) recover() error {
	bases, err := l.listSegments()
	if err != nil {
		return err
	}
	for k, base := range bases {
		s, err := l.openSegment(base, k == len(bases)-1)
		if err != nil {
			return err
		}
		if s == nil { // an orphan from a crash while rolling, now removed
			break
		}
		if err := l.checkContiguous(s); err != nil {
			l.closeSegment(s)
			return err
		}
		s.refs.Store(1)
		l.mu.segs = append(l.mu.segs, s)
	}
	if len(l.mu.segs) == 0 {
		return nil
	}
	for _, s := range l.mu.segs[:len(l.mu.segs)-1] {
		if err := l.loadSealed(s); err != nil {
			return err
		}
		s.sealed = true
	}
	return l.recoverTail(l.tail())
}

// listSegments returns the segment bases in order, removing leftovers of
// interrupted .idx writes.
func (l *Log) listSegments() ([]uint64, error) {
	names, err := l.cfg.FS.List(l.dir)
	if err != nil {
		return nil, fmt.Errorf("log: list %s: %w", l.dir, err)
	}
	var bases []uint64
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, ".seg"):
			base, ok := parseBase(n, ".seg")
			if !ok {
				return nil, fmt.Errorf("log: unexpected segment file name %q in %s", n, l.dir)
			}
			bases = append(bases, base)
		case strings.HasSuffix(n, ".idx.tmp"):
			if err := l.cfg.FS.Remove(vfs.Join(l.dir, n)); err != nil {
				return nil, err
			}
		case strings.HasSuffix(n, ".idx"):
		default:
			l.cfg.Logger.Warn("ignoring unknown file in the commit log directory", "file", n)
		}
	}
	return bases, nil // List is sorted and names are zero-padded: already in order
}

// openSegment opens and maps one segment and checks its header. For the
// last segment, a file whose header never became durable and which holds no
// data is an interrupted roll: it is removed and nil is returned.
func (l *Log) openSegment(base uint64, last bool) (*segment, error) {
	name := segName(l.dir, base)
	f, err := l.cfg.FS.Open(name)
	if err != nil {
		return nil, fmt.Errorf("log: open %s: %w", name, err)
	}
	s := &segment{name: name, f: f}
	size, err := f.Size()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if size > 0 {
		if s.data, s.unmap, err = f.MapReadOnly(size); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	hdr, herr := decodeSegHeader(s.data)
	if herr == nil && hdr.size == uint64(size) && size != l.cfg.SegmentSizeBytes {
		l.closeSegment(s)
		return nil, fmt.Errorf("log: %s was written with SegmentSizeBytes %d, configured %d; the segment size of an existing log cannot change", name, size, l.cfg.SegmentSizeBytes)
	}
	if herr != nil || size != l.cfg.SegmentSizeBytes {
		if last && allZero(s.data[min(int64(len(s.data)), SegmentHeaderBytes):]) {
			l.cfg.Logger.Warn("removing a segment whose creation did not complete", "file", name)
			l.closeSegment(s)
			return nil, l.removeOrphan(base)
		}
		l.closeSegment(s)
		if herr == nil {
			herr = fmt.Errorf("size %d, want %d", size, l.cfg.SegmentSizeBytes)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, herr)
	}
	s.hdr = hdr
	if err := l.checkHeader(s, base); err != nil {
		l.closeSegment(s)
		return nil, err
	}
	return s, nil
}

func (l *Log) removeOrphan(base uint64) error {
	if err := l.cfg.FS.Remove(segName(l.dir, base)); err != nil {
		return err
	}
	if err := l.cfg.FS.Remove(idxName(l.dir, base)); err != nil && !isNotExist(err) {
		return err
	}
	return l.cfg.FS.SyncDir(l.dir)
}

func (l *Log) checkHeader(s *segment, base uint64) error {
	h := s.hdr
	size := uint64(l.cfg.SegmentSizeBytes)
	switch {
	case h.size != size:
		return fmt.Errorf("log: %s was written with SegmentSizeBytes %d, configured %d; the segment size of an existing log cannot change", s.name, h.size, size)
	case h.base != base || base%size != 0:
		return fmt.Errorf("%w: %s says base %d", ErrCorrupt, s.name, h.base)
	case h.start < SegmentHeaderBytes || h.start%8 != 0 || h.start > size:
		return fmt.Errorf("%w: %s has first record position %d", ErrCorrupt, s.name, h.start)
	case h.first == 0:
		return fmt.Errorf("%w: %s has first index 0", ErrCorrupt, s.name)
	}
	return nil
}

// checkContiguous checks s against the previous segment's header: bases
// follow each other (entry continuity is checked once entries are loaded).
func (l *Log) checkContiguous(s *segment) error {
	if len(l.mu.segs) == 0 {
		return nil
	}
	prev := l.mu.segs[len(l.mu.segs)-1]
	if s.hdr.base != prev.hdr.base+uint64(l.cfg.SegmentSizeBytes) {
		return fmt.Errorf("%w: segment %s does not follow %s (a segment is missing)", ErrCorrupt, s.name, prev.name)
	}
	// Equal first indexes are legal: a log reset after a snapshot can
	// start near a segment's end, and if the first record does not fit
	// there the segment is sealed empty.
	if s.hdr.first < prev.hdr.first {
		return fmt.Errorf("%w: segment %s starts at index %d, not after %s (%d)", ErrCorrupt, s.name, s.hdr.first, prev.name, prev.hdr.first)
	}
	return nil
}

// loadSealed loads a sealed segment's entries from its .idx, or rebuilds the
// .idx by a strict scan: every byte of a sealed segment was synced, so a bad
// record there is corruption, not a torn write.
func (l *Log) loadSealed(s *segment) error {
	next := l.mu.segs[indexOf(l.mu.segs, s)+1]
	ents, err := l.readIdx(s)
	if err != nil {
		l.cfg.Logger.Warn("rebuilding segment index", "file", s.name, "reason", err)
		var cut error
		ents, _, cut = l.scan(s)
		if cut != nil {
			return fmt.Errorf("%w: sealed segment %s: %w", ErrCorrupt, s.name, cut)
		}
		s.ents = ents
		if err := l.writeIdx(s); err != nil {
			return err
		}
		if err := l.cfg.FS.SyncDir(l.dir); err != nil {
			return err
		}
	}
	s.ents = ents
	if got := s.hdr.first + uint64(len(ents)); got != next.hdr.first {
		return fmt.Errorf("%w: %s ends before index %d but %s starts at %d", ErrCorrupt, s.name, got, next.name, next.hdr.first)
	}
	if len(ents) > 0 && ents[len(ents)-1].term != next.hdr.prevTerm {
		return fmt.Errorf("%w: %s's last term %d differs from %s's previous term %d", ErrCorrupt, s.name, ents[len(ents)-1].term, next.name, next.hdr.prevTerm)
	}
	return nil
}

func indexOf(segs []*segment, s *segment) int {
	for k, x := range segs {
		if x == s {
			return k
		}
	}
	return -1
}

func (l *Log) readIdx(s *segment) ([]ent, error) {
	f, err := l.cfg.FS.Open(idxName(l.dir, s.hdr.base))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size > idxHeaderBytes+idxEntryBytes*(l.cfg.SegmentSizeBytes/RecordHeaderBytes) {
		return nil, fmt.Errorf("idx file of %d bytes is too large", size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	ents, err := decodeIdx(b, s.hdr.first, int64(s.hdr.start), l.cfg.SegmentSizeBytes)
	if err != nil {
		return nil, err
	}
	// The table is self-consistent; spot-check it against the segment so a
	// stale .idx paired with other data is caught.
	for _, k := range []int{0, len(ents) - 1} {
		if len(ents) == 0 {
			break
		}
		h, err := parseRecord(s.data[ents[k].pos:], l.cfg.MaxEntryBytes)
		if err != nil || h.index != s.hdr.first+uint64(k) || h.term != ents[k].term || h.length != ents[k].length {
			return nil, fmt.Errorf("idx entry %d does not match the segment", k)
		}
	}
	return ents, nil
}

// scan walks records from the segment's start and returns the valid prefix,
// the position after it, and why it stopped (nil at a clean end: zeros or
// the end of the file).
func (l *Log) scan(s *segment) ([]ent, int64, error) {
	var ents []ent
	pos := int64(s.hdr.start)
	want, prevTerm := s.hdr.first, s.hdr.prevTerm
	for pos < int64(len(s.data)) {
		h, err := parseRecord(s.data[pos:], l.cfg.MaxEntryBytes)
		if errors.Is(err, errEndOfLog) {
			return ents, pos, nil
		}
		switch {
		case err != nil:
		case h.index != want:
			err = fmt.Errorf("record index %d, want %d", h.index, want)
		case h.term < prevTerm:
			err = fmt.Errorf("record term %d below the previous term %d", h.term, prevTerm)
		}
		if err != nil {
			return ents, pos, fmt.Errorf("at position %d: %w", pos, err)
		}
		ents = append(ents, ent{pos: uint32(pos), length: h.length, term: h.term})
		pos += recordSize(int(h.length))
		want, prevTerm = want+1, h.term
	}
	return ents, pos, nil
}

// recoverTail scans the tail segment, cuts it at the first invalid record
// and zeroes everything after the cut.
func (l *Log) recoverTail(t *segment) error {
	if err := l.cfg.FS.Remove(idxName(l.dir, t.hdr.base)); err == nil {
		// The tail was sealed once but its successor never became durable.
		if err := l.cfg.FS.SyncDir(l.dir); err != nil {
			return err
		}
	} else if !isNotExist(err) {
		return err
	}
	ents, end, cut := l.scan(t)
	t.ents = ents
	// Only the appends since the last sync can have left bytes past the
	// cut. The window below (two maximum-size records) covers a torn
	// record and what follows it closely; it does not cover a crash after
	// more unsynced bytes than that (the raft loop syncs once per Ready).
	// Scanning the whole rest of a preallocated segment instead costs a
	// page-cache fault per page (about 2 s for 1 GiB). A stale record
	// further out could only come back by chaining exactly onto new
	// records (same position, next index, CRC), and it would be an entry
	// this node once received from a leader, which raft tolerates like an
	// append whose ack was lost.
	window := min(int64(len(t.data)), end+2*recordSize(l.cfg.MaxEntryBytes)+1<<20)
	if lastNonZero := lastNonZeroEnd(t.data[:window], end); lastNonZero > end {
		l.cfg.Logger.Warn("cutting the commit log at a torn or damaged record",
			"file", t.name, "position", end, "last_valid_index", t.lastIndex(), "reason", cut, "bytes_dropped", lastNonZero-end)
		return l.zero(t, end, lastNonZero) // syncs
	}
	// Records that a killed process wrote but never synced are still in
	// the page cache, so the scan found them, and from now on they count
	// as durable: raft takes every stored entry as stable and acknowledges
	// it. Make that true before anyone relies on it.
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, t.name, err)
	}
	return nil
}

// lastNonZeroEnd returns the end of the last nonzero 8-byte word at or after
// from, or from if there is none.
func lastNonZeroEnd(data []byte, from int64) int64 {
	const chunk = 64 << 10
	end := from
	for p := from; p < int64(len(data)); p += chunk {
		q := min(p+chunk, int64(len(data)))
		if !allZero(data[p:q]) {
			end = q
		}
	}
	return end
}
