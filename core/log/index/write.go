package index

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// roll seals the full tail t (nil when there is none) and starts a new file
// whose entry 0 will have offset first.
func (x *Index) roll(t *segment, first uint64) (*segment, error) {
	if t != nil {
		if t.first == first {
			return nil, fmt.Errorf("%w: %s holds %d entries, all at offset %d", ErrTooManyKeys, t.path, t.st.used, first)
		}
		if err := x.seal(t); err != nil {
			return nil, x.fail(err)
		}
	}
	s, err := x.create(first)
	if err != nil {
		// Nothing changed yet: a later Add may retry.
		return nil, err
	}
	x.mu.Lock()
	x.mu.segs = append(x.mu.segs, s)
	x.mu.Unlock()
	x.dirDirty = true
	return s, nil
}

// seal writes the footer of a full file and syncs it: the next file's name
// must not become durable before this file is whole on disk, since Open
// trusts every file but the last.
func (x *Index) seal(t *segment) error {
	b, off := t.footerImage(), t.geo.footerOff()
	// Readers never read the footer, so it is written without the lock.
	if !bytes.Equal(t.data[off:off+footerBytes], b) {
		if _, err := t.f.WriteAt(b, off); err != nil {
			return fmt.Errorf("index: write footer of %s: %w", t.path, err)
		}
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("index: sync full file %s: %w", t.path, err)
	}
	t.dirty = false
	return nil
}

// create makes a new file under a temporary name, preallocated, with a
// synced header, and renames it: the final name never exists without them.
func (x *Index) create(first uint64) (*segment, error) {
	path := vfs.Join(x.cfg.Dir, fileName(first))
	tmp := path + tmpSuffix
	f, err := x.cfg.FS.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("index: create %s: %w", tmp, err)
	}
	s, err := x.initFile(f, path, tmp, first)
	if err != nil {
		_ = f.Close()
		_ = x.cfg.FS.Remove(tmp)
		return nil, err
	}
	return s, nil
}

func (x *Index) initFile(f vfs.File, path, tmp string, first uint64) (*segment, error) {
	geo := x.cfg.geometry()
	if err := f.Preallocate(geo.size()); err != nil {
		return nil, fmt.Errorf("index: preallocate %s: %w", tmp, err)
	}
	var b [headerBytes]byte
	header{geo: geo, first: first}.put(b[:])
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return nil, fmt.Errorf("index: write header of %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("index: sync %s: %w", tmp, err)
	}
	data, unmap, err := f.MapReadOnly(geo.size())
	if err != nil {
		return nil, fmt.Errorf("index: map %s: %w", tmp, err)
	}
	if err := x.cfg.FS.Rename(tmp, path); err != nil {
		_ = unmap()
		return nil, fmt.Errorf("index: rename %s: %w", tmp, err)
	}
	return &segment{path: path, f: f, data: data, unmap: unmap, geo: geo, first: first, st: emptyStats(first)}, nil
}

// Sync makes every Add, TruncateAbove and DeleteBefore so far durable. It
// does not block readers, and blocks Add only while it collects the files to
// sync. A failure is sticky: see "Durability" in the package documentation.
func (x *Index) Sync() error {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	files, dir, err := x.dirtyFiles()
	if err != nil {
		return err
	}
	return x.flush(files, dir)
}

// dirtyFiles takes the set of files written since the last Sync.
func (x *Index) dirtyFiles() ([]*segment, bool, error) {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if err := x.writable(); err != nil {
		return nil, false, err
	}
	var files []*segment
	for _, s := range x.mu.segs {
		if s.dirty {
			files = append(files, s)
			s.dirty = false
		}
	}
	dir := x.dirDirty
	x.dirDirty = false
	return files, dir, nil
}

// flush syncs files, then the directory, so a name is never durable before
// its bytes. The caller holds syncMu, so no file is released meanwhile.
func (x *Index) flush(files []*segment, dir bool) error {
	for _, s := range files {
		if err := s.f.Sync(); err != nil {
			return x.failLocked(fmt.Errorf("index: sync %s: %w", s.path, err))
		}
	}
	if dir {
		if err := x.cfg.FS.SyncDir(x.cfg.Dir); err != nil {
			return x.failLocked(fmt.Errorf("index: sync directory %s: %w", x.cfg.Dir, err))
		}
	}
	return nil
}

func (x *Index) failLocked(err error) error {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	return x.fail(err)
}

// TruncateAbove drops every entry with offset >= physEnd: later files are
// removed, the file holding physEnd is cut. A replay from physEnd then adds
// them again without duplicates. Durable at the next Sync (removals at once).
func (x *Index) TruncateAbove(physEnd uint64) error {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if err := x.writable(); err != nil {
		return err
	}
	segs := x.mu.segs
	keep := sort.Search(len(segs), func(i int) bool { return segs[i].first >= physEnd })
	if keep == 0 {
		return x.removeFrom(0)
	}
	t := segs[keep-1]
	cut := t.search(physEnd)
	if keep == len(segs) && cut == t.st.used {
		return nil
	}
	// Validate what stays before changing anything: t may be a full file
	// that Open trusted without reading its entries.
	r := t.scan(cut)
	if cut == 0 || r.st.used != cut || r.st.lastPhys >= physEnd {
		return corruptf(t.path, "entries below number %d do not form a valid prefix below offset %d", cut, physEnd)
	}
	if err := x.removeFrom(keep); err != nil {
		return err
	}
	return x.cutTail(t, r)
}

// removeFrom removes the files from number keep on, newest first, and syncs
// the directory, so that no removed file can reappear after a crash behind a
// new tail that lost its footer.
func (x *Index) removeFrom(keep int) error {
	segs := x.mu.segs
	if keep >= len(segs) {
		return nil
	}
	x.mu.Lock()
	x.mu.segs = segs[:keep:keep]
	x.mu.Unlock()
	for i := len(segs) - 1; i >= keep; i-- {
		if err := x.removeFile(segs[i]); err != nil {
			return x.fail(err)
		}
	}
	if err := x.cfg.FS.SyncDir(x.cfg.Dir); err != nil {
		return x.fail(fmt.Errorf("index: sync directory %s: %w", x.cfg.Dir, err))
	}
	return nil
}

// cutTail makes t the tail holding exactly the prefix r.
func (x *Index) cutTail(t *segment, r scanResult) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := t.st.used
	t.st = r.st
	if _, err := t.zeroRange(t.geo.entryOff(r.st.used), t.geo.entryOff(old)); err != nil {
		return x.fail(err)
	}
	if r.st.used < t.geo.entries {
		if _, err := t.zeroRange(t.geo.footerOff(), t.geo.size()); err != nil {
			return x.fail(err)
		}
	}
	if err := t.writeSlots(r.heads); err != nil {
		return x.fail(err)
	}
	return nil
}

// DeleteBefore removes, oldest first, the files whose every entry has an
// offset below physStart; never the last file. Durable at the next Sync.
func (x *Index) DeleteBefore(physStart uint64) error {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if err := x.writable(); err != nil {
		return err
	}
	segs := x.mu.segs
	n := 0
	for n+1 < len(segs) && segs[n].st.lastPhys < physStart {
		n++
	}
	if n == 0 {
		return nil
	}
	x.mu.Lock()
	x.mu.segs = append([]*segment(nil), segs[n:]...)
	x.mu.Unlock()
	x.dirDirty = true
	for _, s := range segs[:n] {
		if err := x.removeFile(s); err != nil {
			return x.fail(err)
		}
	}
	return nil
}

// removeFile releases and deletes a file the readers can no longer reach.
func (x *Index) removeFile(s *segment) error {
	if err := s.release(); err != nil {
		return fmt.Errorf("index: close %s: %w", s.path, err)
	}
	if err := x.cfg.FS.Remove(s.path); err != nil {
		return fmt.Errorf("index: remove %s: %w", s.path, err)
	}
	return nil
}
