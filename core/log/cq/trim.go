package cq

import (
	"errors"
	"fmt"
	"slices"
)

// zeroChunkBytes bounds the buffer TruncateAbove writes zeros from.
const zeroChunkBytes = 64 << 10

// TruncateAbove drops, in every queue, the trailing units that point at or
// past physEnd, and trailing holes: it zeroes them, lowers next, and removes
// the files past the first that no longer hold any unit. Because units are in
// increasing PhysOffset order within a queue, this removes exactly the units
// of messages at or past physEnd. Use it when the commit log is truncated,
// and after Open with the recovered log's end (see the package doc).
// Durable after the next Sync. Writer goroutine only.
func (s *Store) TruncateAbove(physEnd uint64) error {
	if s.mu.closed {
		return ErrClosed
	}
	var errs []error
	for _, q := range s.sortedQueues() {
		errs = append(errs, s.truncateQueue(q, physEnd))
	}
	return errors.Join(errs...)
}

func (s *Store) truncateQueue(q *queue, physEnd uint64) error {
	next := q.next.Load()
	for next > q.min {
		if u := s.unitAt(q, next-1); u.PhysOffset != 0 && u.PhysOffset < physEnd {
			break
		}
		next--
	}
	return s.cut(q, next, "phys_end", physEnd)
}

// TruncateQueue drops the units of one queue at and past next (min ≤ next ≤
// the queue's next), as TruncateAbove does. Recovery needs it: a torn or
// garbage unit past the last message of a queue can hold any value, even one
// below the log's end that TruncateAbove keeps, so after replaying the log
// the dispatcher cuts every queue at the next it knows to be true. Durable
// after the next Sync. Writer goroutine only.
func (s *Store) TruncateQueue(topic string, queue uint32, next uint64) error {
	if s.mu.closed {
		return ErrClosed
	}
	id := QueueID{Topic: topic, Queue: queue}
	q := s.mu.queues[id]
	if q == nil {
		return fmt.Errorf("%w: %s", ErrUnknownQueue, id)
	}
	switch cur := q.next.Load(); {
	case next < q.min:
		return fmt.Errorf("%w: truncate %s to %d, min %d", ErrOffsetTooSmall, id, next, q.min)
	case next > cur:
		return fmt.Errorf("%w: truncate %s to %d, next %d", ErrOffsetTooLarge, id, next, cur)
	}
	return s.cut(q, next, "to", next)
}

// cut lowers q's next to next (≥ min): it zeroes the units in between and
// removes the files past the first that start at or past next.
func (s *Store) cut(q *queue, next uint64, why string, arg uint64) error {
	old := q.next.Load()
	// Keep the files that start below next, and always the first one.
	keep := max(1, int((next-q.files[0].first+s.upf-1)/s.upf))
	if next == old && keep == len(q.files) {
		return nil
	}
	removed := slices.Clone(q.files[keep:])
	// Lower next before zeroing: once the write lock is released no reader
	// reads at or past the new next, and none still copies from before.
	s.mu.Lock()
	q.next.Store(next)
	q.files = slices.Clone(q.files[:keep])
	s.mu.Unlock()
	s.cfg.Logger.Info("cq: truncated queue", "topic", q.id.Topic, "queue", q.id.Queue,
		why, arg, "old_next", old, "next", next, "removed_files", len(removed))
	zerr := s.zero(q, next, old)
	// Remove the last file first: if only some removals reach the disk
	// before a crash, what is left is still contiguous.
	slices.Reverse(removed)
	return errors.Join(zerr, s.removeSegments(q, removed))
}

// zero writes zeros over units [from, to) of q's files (units past its last
// file are in files being removed and need no zeroing).
func (s *Store) zero(q *queue, from, to uint64) error {
	last := q.files[len(q.files)-1]
	to = min(to, last.first+s.upf)
	if from >= to {
		return nil
	}
	zeros := make([]byte, min(zeroChunkBytes, int64(to-from)*UnitBytes))
	for k := from; k < to; {
		seg := q.files[(k-q.files[0].first)/s.upf]
		n := min(to, seg.first+s.upf, k+uint64(len(zeros)/UnitBytes)) - k
		if err := s.write(seg, int64(k-seg.first)*UnitBytes, zeros[:n*UnitBytes]); err != nil {
			return err
		}
		k += n
	}
	return nil
}

// DeleteBefore is retention: in every queue it removes the files (never the
// last one) all of whose units point below physStart, and raises min to the
// first unit at or past physStart (to next if there is none). Call it after
// the commit log dropped everything below physStart, and again after Open,
// since min is not persisted. Durable after the next Sync. Writer goroutine
// only.
func (s *Store) DeleteBefore(physStart uint64) error {
	if s.mu.closed {
		return ErrClosed
	}
	var errs []error
	for _, q := range s.sortedQueues() {
		errs = append(errs, s.deleteQueue(q, physStart))
	}
	return errors.Join(errs...)
}

func (s *Store) deleteQueue(q *queue, physStart uint64) error {
	next := q.next.Load()
	k := 0
	for k < len(q.files)-1 && s.lastPhys(q.files[k], next) < physStart {
		k++
	}
	newMin := s.firstAtOrAbove(q, max(q.min, q.files[k].first), next, physStart)
	if k == 0 && newMin == q.min {
		return nil
	}
	removed := slices.Clone(q.files[:k])
	// Readers copy units out under the read lock, so once the write lock
	// has been held no reader can still use a removed file's mapping.
	s.mu.Lock()
	q.min = newMin
	q.files = slices.Clone(q.files[k:])
	s.mu.Unlock()
	if k > 0 {
		s.cfg.Logger.Info("cq: deleted files", "topic", q.id.Topic, "queue", q.id.Queue,
			"phys_start", physStart, "files", k, "min", newMin)
	}
	return s.removeSegments(q, removed)
}

// lastPhys is the PhysOffset of the last written unit of seg below next, or
// 0 if it has none.
func (s *Store) lastPhys(seg *segment, next uint64) uint64 {
	end := min(seg.first+s.upf, max(next, seg.first))
	for k := end; k > seg.first; k-- {
		pos := (k - 1 - seg.first) * UnitBytes
		if u := decodeUnit(seg.data[pos : pos+UnitBytes]); u.PhysOffset != 0 {
			return u.PhysOffset
		}
	}
	return 0
}

// firstAtOrAbove returns the first queue offset in [from, next) whose unit
// points at or past physStart, or next. Holes point at 0 and are passed.
func (s *Store) firstAtOrAbove(q *queue, from, next, physStart uint64) uint64 {
	for k := from; k < next; k++ {
		if s.unitAt(q, k).PhysOffset >= physStart {
			return k
		}
	}
	return next
}

// removeSegments closes and deletes files already taken out of q.files.
func (s *Store) removeSegments(q *queue, segs []*segment) error {
	var errs []error
	for _, seg := range segs {
		errs = append(errs, seg.close())
		if err := s.cfg.FS.Remove(seg.name); err != nil {
			errs = append(errs, fmt.Errorf("cq: remove %s: %w", seg.name, err))
		}
	}
	if len(segs) > 0 {
		s.markDir(q.dir)
	}
	return errors.Join(errs...)
}
