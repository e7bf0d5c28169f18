package cq

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Put writes unit u at the queue offset, creating the queue and its files on
// demand. Writing is by position, so putting the same unit again is a no-op
// and a replay of the log after a crash is idempotent.
//
// offset must be at least the queue's min, and at most UnitsPerFile past its
// next: a bigger gap means the dispatcher lost track, and refusing it keeps a
// bad offset from creating an unbounded number of files. A new queue starts
// at offset: its min is offset, and its first file is the one holding it.
// u.PhysOffset must be nonzero (zero marks a hole).
//
// Only the writer goroutine may call Put. An error from the file system
// leaves the queue in an unknown state: treat it as fatal, reopen, recover.
func (s *Store) Put(topic string, queue uint32, offset uint64, u Unit) error {
	if u.PhysOffset == 0 {
		return fmt.Errorf("%w: %s/%d offset %d", ErrZeroPhysOffset, topic, queue, offset)
	}
	if err := checkTopic(topic); err != nil {
		return err
	}
	if s.mu.closed {
		return ErrClosed
	}
	id := QueueID{Topic: topic, Queue: queue}
	if offset >= s.maxOffset {
		return fmt.Errorf("%w: %s offset %d is at or past the limit %d", ErrOffsetTooLarge, id, offset, s.maxOffset)
	}
	q := s.mu.queues[id]
	if q == nil {
		var err error
		if q, err = s.newQueue(id, offset); err != nil {
			return err
		}
	}
	return s.put(q, offset, u)
}

func (s *Store) put(q *queue, offset uint64, u Unit) error {
	next := q.next.Load()
	switch {
	case offset < q.min:
		return fmt.Errorf("%w: put %s offset %d, min %d", ErrOffsetTooSmall, q.id, offset, q.min)
	case offset > next && offset-next > s.upf:
		return fmt.Errorf("%w: put %s offset %d leaves a gap of more than %d units after next %d",
			ErrOffsetTooLarge, q.id, offset, s.upf, next)
	}
	seg, err := s.segmentFor(q, offset)
	if err != nil {
		return err
	}
	b := s.unitBuf[:]
	u.encodeTo(b)
	pos := int64(offset-seg.first) * UnitBytes
	if offset < next {
		return s.rewrite(seg, pos, b)
	}
	// Readers never read at or past next, so this write needs no lock; the
	// atomic store then publishes it.
	if err := s.write(seg, pos, b); err != nil {
		return err
	}
	q.next.Store(offset + 1)
	return nil
}

// rewrite writes a unit below next: a replay, or the filling of a hole.
func (s *Store) rewrite(seg *segment, pos int64, b []byte) error {
	if bytes.Equal(seg.data[pos:pos+UnitBytes], b) {
		return nil // a replay of what is there: leave the file (and Sync) alone
	}
	// A reader may be copying this very unit; the write lock waits for it.
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write(seg, pos, b)
}

func (s *Store) write(seg *segment, pos int64, b []byte) error {
	if _, err := seg.f.WriteAt(b, pos); err != nil {
		return fmt.Errorf("cq: write %s at %d: %w", seg.name, pos, err)
	}
	if !seg.dirty {
		seg.dirty = true
		s.dirty = append(s.dirty, seg)
	}
	return nil
}

// newQueue creates the directory and first file of a queue that starts at
// offset, and publishes it.
func (s *Store) newQueue(id QueueID, offset uint64) (*queue, error) {
	dir := s.queueDir(id)
	if err := s.cfg.FS.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("cq: mkdir %s: %w", dir, err)
	}
	// The topic directory may be new too; syncing a directory that did not
	// change is cheap and happens once per queue.
	s.markDir(dir)
	s.markDir(path.Dir(dir))
	s.markDir(s.cfg.Dir)
	seg, err := s.createSegment(dir, offset-offset%s.upf)
	if err != nil {
		return nil, err
	}
	q := &queue{id: id, dir: dir, files: []*segment{seg}, min: offset}
	q.next.Store(offset)
	s.mu.Lock()
	s.mu.queues[id] = q
	s.mu.Unlock()
	s.cfg.Logger.Debug("cq: new queue", "topic", id.Topic, "queue", id.Queue, "offset", offset)
	return q, nil
}

// segmentFor returns the file holding unit offset, creating it and any file
// before it that is missing (at most two: see the gap limit in put).
func (s *Store) segmentFor(q *queue, offset uint64) (*segment, error) {
	idx := (offset - q.files[0].first) / s.upf
	for uint64(len(q.files)) <= idx {
		seg, err := s.createSegment(q.dir, q.files[len(q.files)-1].first+s.upf)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		q.files = append(q.files, seg)
		s.mu.Unlock()
	}
	return q.files[idx], nil
}

// createSegment creates, preallocates and maps a new file. Its name becomes
// durable at the next Sync, after its size (see Sync).
func (s *Store) createSegment(dir string, first uint64) (*segment, error) {
	name := vfs.Join(dir, fileName(first))
	s.markDir(dir)
	f, err := s.cfg.FS.Create(name)
	if err != nil {
		return nil, fmt.Errorf("cq: create %s: %w", name, err)
	}
	if err := f.Preallocate(s.fileBytes); err != nil {
		return nil, s.abandon(f, name, fmt.Errorf("cq: preallocate %s: %w", name, err))
	}
	seg, err := s.mapSegment(f, name, first)
	if err != nil {
		return nil, s.abandon(f, name, err)
	}
	return seg, nil
}

// abandon closes and removes a file that could not be set up. A leftover of
// size 0 would be harmless (recovery ignores trailing empty files), so the
// removal is best effort.
func (s *Store) abandon(f vfs.File, name string, err error) error {
	return errors.Join(err, f.Close(), s.cfg.FS.Remove(name))
}

func (s *Store) mapSegment(f vfs.File, name string, first uint64) (*segment, error) {
	data, unmap, err := f.MapReadOnly(s.fileBytes)
	if err != nil {
		return nil, fmt.Errorf("cq: map %s: %w", name, err)
	}
	if int64(len(data)) != s.fileBytes {
		return nil, errors.Join(fmt.Errorf("cq: map %s: got %d bytes, want %d", name, len(data), s.fileBytes), unmap())
	}
	return &segment{first: first, name: name, f: f, data: data, unmap: unmap}, nil
}

func (s *Store) markDir(dir string) { s.dirtyDirs[path.Clean(dir)] = struct{}{} }

// Sync makes every Put, TruncateAbove and DeleteBefore so far durable. It
// fdatasyncs each file written since the last Sync once, then syncs the
// changed directories, deepest first: a name must not become durable before
// the bytes behind it. It holds no lock, so readers are never blocked by the
// disk. After an error, treat the store as failed (see the package doc).
func (s *Store) Sync() error {
	if s.mu.closed {
		return ErrClosed
	}
	segs, dirs := s.dirty, s.takeDirs()
	s.dirty = nil
	for i, seg := range segs {
		if seg.removed {
			continue
		}
		if err := seg.f.Sync(); err != nil {
			s.requeue(segs[i:], dirs)
			return fmt.Errorf("cq: sync %s: %w", seg.name, err)
		}
		seg.dirty = false
	}
	for i, dir := range dirs {
		if err := s.cfg.FS.SyncDir(dir); err != nil {
			s.requeue(nil, dirs[i:])
			return fmt.Errorf("cq: sync dir %s: %w", dir, err)
		}
	}
	return nil
}

// takeDirs empties the set of changed directories and returns it deepest
// first.
func (s *Store) takeDirs() []string {
	dirs := make([]string, 0, len(s.dirtyDirs))
	for d := range s.dirtyDirs {
		dirs = append(dirs, d)
	}
	clear(s.dirtyDirs)
	slices.SortFunc(dirs, func(a, b string) int {
		if da, db := strings.Count(a, "/"), strings.Count(b, "/"); da != db {
			return db - da
		}
		return strings.Compare(a, b)
	})
	return dirs
}

// requeue puts back what a failed Sync did not finish.
func (s *Store) requeue(segs []*segment, dirs []string) {
	for _, seg := range segs {
		if !seg.removed {
			s.dirty = append(s.dirty, seg)
		}
	}
	for _, d := range dirs {
		s.dirtyDirs[d] = struct{}{}
	}
}
