package index

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// chunkBytes bounds the buffers that zeroing and slot rewriting write from.
const chunkBytes = 64 << 10

// scanResult is what a scan of a file's entries finds.
type scanResult struct {
	st    stats
	heads []uint32 // per slot: 1 + newest entry number in the prefix; 0 = none
}

// scan walks entries [0, limit) and stops at the first that does not
// continue a valid prefix (see "Recovery" in doc.go). It reads only.
func (s *segment) scan(limit int64) scanResult {
	r := scanResult{st: emptyStats(s.first), heads: make([]uint32, s.geo.slots)}
	for k := int64(0); k < limit; k++ {
		e, ok := s.entryAt(k)
		if !ok || !r.continues(s, k, e) {
			break
		}
		r.heads[s.geo.slotOf(e.hash)] = uint32(k + 1)
		r.st.add(e)
	}
	return r
}

// continues reports whether e, at number k, extends the prefix: its offset
// does not go back, and its prev is exactly what Add would have written.
func (r *scanResult) continues(s *segment, k int64, e entry) bool {
	if k == 0 && e.phys != s.first {
		return false
	}
	return e.phys >= r.st.lastPhys && e.prev == r.heads[s.geo.slotOf(e.hash)]
}

// load opens every file of the directory and recovers the tail.
func (x *Index) load() ([]*segment, error) {
	firsts, err := x.listDir()
	if err != nil {
		return nil, err
	}
	segs := make([]*segment, 0, len(firsts))
	for _, first := range firsts {
		s, err := openSegment(x.cfg.FS, vfs.Join(x.cfg.Dir, fileName(first)), first)
		if err != nil {
			releaseAll(segs)
			return nil, err
		}
		segs = append(segs, s)
	}
	if err := checkSealed(segs); err != nil {
		releaseAll(segs)
		return nil, err
	}
	segs, err = x.recoverTail(segs)
	if err != nil {
		releaseAll(segs)
		return nil, err
	}
	return segs, nil
}

// listDir returns the first offsets of the index files, ascending, after
// removing leftovers of interrupted creations.
func (x *Index) listDir() ([]uint64, error) {
	names, err := x.cfg.FS.List(x.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("index: list %s: %w", x.cfg.Dir, err)
	}
	var firsts []uint64
	for _, name := range names {
		path := vfs.Join(x.cfg.Dir, name)
		if strings.HasSuffix(name, tmpSuffix) {
			if err := x.cfg.FS.Remove(path); err != nil {
				return nil, fmt.Errorf("index: remove leftover %s: %w", path, err)
			}
			x.cfg.Logger.Info("index: removed leftover of an interrupted file creation", "file", path)
			x.dirDirty = true
			continue
		}
		first, ok := parseName(name)
		if !ok {
			return nil, corruptf(path, "unexpected file in the index directory")
		}
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	return firsts, nil
}

// checkSealed validates the footers of all files but the last, and that no
// file overlaps the next.
func checkSealed(segs []*segment) error {
	for i := 0; i+1 < len(segs); i++ {
		s, next := segs[i], segs[i+1]
		if err := s.loadFooter(); err != nil {
			return err
		}
		if s.st.lastPhys > next.first {
			return corruptf(s.path, "last offset %d is past the first offset %d of %s", s.st.lastPhys, next.first, next.path)
		}
	}
	return nil
}

// recoverTail recomputes the tail's live entries and repairs its bytes. A
// tail without a valid entry is removed and its predecessor recovered.
func (x *Index) recoverTail(segs []*segment) ([]*segment, error) {
	for len(segs) > 0 {
		t := segs[len(segs)-1]
		r := t.scan(t.geo.entries)
		if r.st.used == 0 {
			x.cfg.Logger.Warn("index: removing a last file that holds no valid entry", "file", t.path)
			segs = segs[:len(segs)-1]
			if err := x.removeFile(t); err != nil {
				return segs, err
			}
			x.dirDirty = true
			continue
		}
		if err := x.repair(t, r); err != nil {
			return segs, err
		}
		t.st = r.st
		x.cfg.Logger.Debug("index: recovered last file", "file", t.path, "entries", r.st.used)
		return segs, nil
	}
	return segs, nil
}

// repair makes the tail's bytes agree with a scan result: entries past the
// prefix zeroed, footer zeroed unless full, slots rebuilt.
func (x *Index) repair(t *segment, r scanResult) error {
	zeroed, err := t.zeroRange(t.geo.entryOff(r.st.used), t.geo.entryOff(t.geo.entries))
	if err != nil {
		return err
	}
	if zeroed {
		x.cfg.Logger.Warn("index: dropped torn or unsynced entries after a crash",
			"file", t.path, "kept", r.st.used)
	}
	if r.st.used < t.geo.entries {
		if _, err := t.zeroRange(t.geo.footerOff(), t.geo.size()); err != nil {
			return err
		}
	}
	return t.writeSlots(r.heads)
}

// zeroRange zeroes the bytes [from, to) of the file, writing only the chunks
// that are not zero already (a clean shutdown writes nothing).
func (s *segment) zeroRange(from, to int64) (bool, error) {
	var zeros []byte
	wrote := false
	for off := from; off < to; {
		end := min(off+chunkBytes, to)
		if !allZero(s.data[off:end]) {
			if zeros == nil {
				zeros = make([]byte, chunkBytes)
			}
			if _, err := s.f.WriteAt(zeros[:end-off], off); err != nil {
				return wrote, fmt.Errorf("index: zero %s at %d: %w", s.path, off, err)
			}
			wrote, s.dirty = true, true
		}
		off = end
	}
	return wrote, nil
}

// writeSlots makes the slot table equal heads, rewriting only the chunks
// that differ.
func (s *segment) writeSlots(heads []uint32) error {
	buf := make([]byte, 0, chunkBytes)
	for i := int64(0); i < int64(len(heads)); {
		n := min(int64(chunkBytes/slotBytes), int64(len(heads))-i)
		buf = buf[:n*slotBytes]
		for j := range n {
			le.PutUint32(buf[j*slotBytes:], heads[i+j])
		}
		off := s.geo.slotOff(i)
		if !bytes.Equal(s.data[off:off+int64(len(buf))], buf) {
			if _, err := s.f.WriteAt(buf, off); err != nil {
				return fmt.Errorf("index: write slots of %s: %w", s.path, err)
			}
			s.dirty = true
		}
		i += n
	}
	return nil
}

func releaseAll(segs []*segment) {
	for _, s := range segs {
		_ = s.release()
	}
}
