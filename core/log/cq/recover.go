package cq

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Open opens the store under cfg.Dir, creating the directory if needed, and
// recovers every queue in it (see "Recovery" in the package doc). The caller
// then calls TruncateAbove, DeleteBefore, replays the log and Syncs.
func Open(cfg Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.FS.MkdirAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("cq: mkdir %s: %w", cfg.Dir, err)
	}
	s := newStore(cfg)
	if err := s.recover(); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	cfg.Logger.Info("cq: opened", "dir", cfg.Dir, "queues", len(s.mu.queues))
	return s, nil
}

// recover finds every queue. The store is not shared yet, so it fills
// s.mu.queues without the lock.
func (s *Store) recover() error {
	topics, err := s.cfg.FS.List(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("cq: list %s: %w", s.cfg.Dir, err)
	}
	for _, topic := range topics {
		if err := checkTopic(topic); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, vfs.Join(s.cfg.Dir, topic), err)
		}
		if err := s.recoverTopic(topic); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) recoverTopic(topic string) error {
	dir := vfs.Join(s.cfg.Dir, topic)
	names, err := s.cfg.FS.List(dir)
	if err != nil {
		return fmt.Errorf("cq: list %s: %w", dir, err)
	}
	for _, name := range names {
		queue, ok := parseQueueDir(name)
		if !ok {
			return fmt.Errorf("%w: %s is not a queue directory name", ErrCorrupt, vfs.Join(dir, name))
		}
		q, err := s.recoverQueue(QueueID{Topic: topic, Queue: queue})
		if err != nil {
			return err
		}
		if q != nil {
			s.mu.queues[q.id] = q
		}
	}
	return nil
}

// recoverQueue opens one queue; it returns nil for a directory without
// files (a crash between its mkdir and its first file).
func (s *Store) recoverQueue(id QueueID) (*queue, error) {
	dir := s.queueDir(id)
	firsts, err := s.listFiles(dir)
	if err != nil {
		return nil, err
	}
	files, err := s.openFiles(dir, firsts)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	q := &queue{id: id, dir: dir, files: files, min: files[0].first}
	q.next.Store(s.recoverNext(q))
	s.cfg.Logger.Debug("cq: recovered queue", "topic", id.Topic, "queue", id.Queue,
		"min", q.min, "next", q.next.Load(), "files", len(files))
	return q, nil
}

// listFiles parses the names in a queue directory, in order.
func (s *Store) listFiles(dir string) ([]uint64, error) {
	names, err := s.cfg.FS.List(dir)
	if err != nil {
		return nil, fmt.Errorf("cq: list %s: %w", dir, err)
	}
	firsts := make([]uint64, 0, len(names))
	for _, name := range names {
		first, ok := parseFileName(name)
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %s is not a queue file name", ErrCorrupt, vfs.Join(dir, name))
		case first%s.upf != 0 || first >= s.maxOffset:
			return nil, fmt.Errorf("%w: %s: offset %d is not a file start for %d units per file",
				ErrCorrupt, vfs.Join(dir, name), first, s.upf)
		}
		// Fixed-width names sort as their numbers do.
		firsts = append(firsts, first)
	}
	return firsts, nil
}

// openFiles opens and maps a queue's files, checking sizes and contiguity.
// Files of size 0 are skipped (see the package doc).
func (s *Store) openFiles(dir string, firsts []uint64) ([]*segment, error) {
	var segs []*segment
	fail := func(err error) ([]*segment, error) {
		for _, seg := range segs {
			err = errors.Join(err, seg.close())
		}
		return nil, err
	}
	for _, first := range firsts {
		name := vfs.Join(dir, fileName(first))
		seg, err := s.openSegment(name, first)
		if err != nil {
			return fail(err)
		}
		if seg == nil {
			s.cfg.Logger.Warn("cq: ignoring empty file (crash during its creation)", "file", name)
			continue
		}
		if len(segs) > 0 {
			if want := segs[0].first + uint64(len(segs))*s.upf; first != want {
				err := fmt.Errorf("%w: %s is missing or empty", ErrCorrupt, vfs.Join(dir, fileName(want)))
				return fail(errors.Join(err, seg.close()))
			}
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// openSegment opens and maps one file; it returns nil, nil for an empty one.
func (s *Store) openSegment(name string, first uint64) (*segment, error) {
	f, err := s.cfg.FS.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cq: open %s: %w", name, err)
	}
	size, err := f.Size()
	switch {
	case err != nil:
		return nil, errors.Join(fmt.Errorf("cq: size of %s: %w", name, err), f.Close())
	case size == 0:
		return nil, f.Close()
	case size != s.fileBytes:
		return nil, errors.Join(fmt.Errorf("%w: %s has %d bytes, want %d", ErrCorrupt, name, size, s.fileBytes), f.Close())
	}
	seg, err := s.mapSegment(f, name, first)
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return seg, nil
}

// recoverNext is one past the last unit with any nonzero byte, searching
// backwards from the end of the last file; the first file's start if there
// is none. A torn unit counts, so that TruncateAbove and replay see it.
func (s *Store) recoverNext(q *queue) uint64 {
	for i := len(q.files) - 1; i >= 0; i-- {
		seg := q.files[i]
		for pos := s.fileBytes - UnitBytes; pos >= 0; pos -= UnitBytes {
			if !zeroUnit(seg.data[pos : pos+UnitBytes]) {
				return seg.first + uint64(pos/UnitBytes) + 1
			}
		}
	}
	return q.files[0].first
}

func zeroUnit(b []byte) bool {
	return binary.LittleEndian.Uint64(b[0:8])|binary.LittleEndian.Uint64(b[8:16])|
		uint64(binary.LittleEndian.Uint32(b[16:20])) == 0
}
