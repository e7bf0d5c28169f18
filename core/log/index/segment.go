package index

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// stats describes the live entries of a file. For the tail it is computed by
// the recovery scan and kept up to date by Add; for a full file it comes from
// the footer.
type stats struct {
	used         int64  // live entries: numbers [0, used)
	lastPhys     uint64 // offset of entry used-1; the file's first when used == 0
	minMs, maxMs int64  // store-time range; empty (min > max) when used == 0
}

func emptyStats(first uint64) stats {
	return stats{lastPhys: first, minMs: math.MaxInt64, maxMs: math.MinInt64}
}

func (s *stats) add(e entry) {
	s.used++
	s.lastPhys = e.phys
	s.minMs = min(s.minMs, e.storeMs)
	s.maxMs = max(s.maxMs, e.storeMs)
}

// meets reports whether the file can hold an entry inside w.
func (s stats) meets(w window) bool {
	return s.used > 0 && s.minMs <= w.hi && w.lo <= s.maxMs
}

// segment is one open .kix file.
type segment struct {
	path  string
	f     vfs.File
	data  []byte // read-only mapping of the whole file
	unmap func() error
	geo   geometry
	first uint64

	// st is written by the writer under Index.mu's write lock and read by
	// readers under its read lock (the writer reads it freely).
	st stats
	// dirty is writer-only: the file was written since the last Sync.
	dirty bool
}

// openSegment opens and validates the header and size of an existing file.
func openSegment(fsys vfs.FS, path string, first uint64) (*segment, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("index: open %s: %w", path, err)
	}
	s, err := mapSegment(f, path, first)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return s, nil
}

func mapSegment(f vfs.File, path string, first uint64) (*segment, error) {
	h, err := readHeader(f, path)
	if err != nil {
		return nil, err
	}
	if h.first != first {
		return nil, corruptf(path, "header says first offset %d, the name says %d", h.first, first)
	}
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("index: size of %s: %w", path, err)
	}
	if size != h.geo.size() {
		return nil, corruptf(path, "size %d, want %d for %d slots and %d entries",
			size, h.geo.size(), h.geo.slots, h.geo.entries)
	}
	data, unmap, err := f.MapReadOnly(size)
	if err != nil {
		return nil, fmt.Errorf("index: map %s: %w", path, err)
	}
	return &segment{path: path, f: f, data: data, unmap: unmap, geo: h.geo, first: first, st: emptyStats(first)}, nil
}

func readHeader(f vfs.File, path string) (header, error) {
	var b [headerBytes]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return header{}, corruptf(path, "shorter than its %d-byte header", headerBytes)
		}
		return header{}, fmt.Errorf("index: read header of %s: %w", path, err)
	}
	h, err := getHeader(b[:])
	if err != nil {
		return header{}, corruptf(path, "%v", err)
	}
	return h, nil
}

// loadFooter validates the footer of a full file and takes its stats.
func (s *segment) loadFooter() error {
	off := s.geo.footerOff()
	ft, err := getFooter(s.data[off : off+footerBytes])
	if err != nil {
		return corruptf(s.path, "%v", err)
	}
	switch {
	case ft.used != s.geo.entries:
		return corruptf(s.path, "footer says %d entries used, capacity is %d", ft.used, s.geo.entries)
	case ft.first != s.first:
		return corruptf(s.path, "footer says first offset %d, header says %d", ft.first, s.first)
	case ft.lastPhys < s.first:
		return corruptf(s.path, "footer's last offset %d is below the first %d", ft.lastPhys, s.first)
	case ft.minMs > ft.maxMs:
		return corruptf(s.path, "footer's time range [%d, %d] is empty", ft.minMs, ft.maxMs)
	}
	s.st = stats{used: ft.used, lastPhys: ft.lastPhys, minMs: ft.minMs, maxMs: ft.maxMs}
	return nil
}

func (s *segment) footerImage() []byte {
	var b [footerBytes]byte
	footer{used: s.st.used, first: s.first, lastPhys: s.st.lastPhys, minMs: s.st.minMs, maxMs: s.st.maxMs}.put(b[:])
	return b[:]
}

func (s *segment) entryAt(k int64) (entry, bool) {
	return getEntry(s.data[s.geo.entryOff(k):])
}

// physAt reads entry k's offset without checking its CRC (for searching).
func (s *segment) physAt(k int64) uint64 { return le.Uint64(s.data[s.geo.entryOff(k)+8:]) }

func (s *segment) slotAt(i int64) uint32 { return le.Uint32(s.data[s.geo.slotOff(i):]) }

// lookup appends to dst, newest first, the offsets of at most limit entries
// of this file with key hash h and a store time in w. The caller holds the
// read lock. Every step checks that the chain stays in range and strictly
// decreasing, so corrupt data ends the walk with ErrCorrupt.
func (s *segment) lookup(h uint64, w window, limit int, dst []uint64) ([]uint64, error) {
	slot := s.geo.slotOf(h)
	bound := s.st.used + 1
	for cur := int64(s.slotAt(slot)); cur != 0 && limit > 0; {
		if cur >= bound {
			return dst, corruptf(s.path, "slot %d chain: entry number %d is out of range or not decreasing", slot, cur-1)
		}
		e, ok := s.entryAt(cur - 1)
		if !ok || s.geo.slotOf(e.hash) != slot {
			return dst, corruptf(s.path, "slot %d chain: entry %d has a bad CRC or belongs to another slot", slot, cur-1)
		}
		if e.hash == h && w.has(e.storeMs) {
			dst = append(dst, e.phys)
			limit--
		}
		bound, cur = cur, int64(e.prev)
	}
	return dst, nil
}

// search returns the first live entry number whose offset is >= phys.
func (s *segment) search(phys uint64) int64 {
	lo, hi := int64(0), s.st.used
	for lo < hi {
		mid := lo + (hi-lo)/2
		if s.physAt(mid) < phys {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// release unmaps and closes the file; the caller made sure no reader uses it.
func (s *segment) release() error {
	return errors.Join(s.unmap(), s.f.Close())
}

func corruptf(path, format string, args ...any) error {
	return fmt.Errorf("index: %s: %w: %s", path, ErrCorrupt, fmt.Sprintf(format, args...))
}
