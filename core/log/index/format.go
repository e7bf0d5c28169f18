package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Sizes and limits of the on-disk format; doc.go has the byte tables.
const (
	headerBytes = 64
	footerBytes = 64
	slotBytes   = 4
	entryBytes  = 32
	// crcOff is where header and footer keep the CRC of the bytes before it.
	crcOff = 60
	// entryCRCOff is where an entry keeps the CRC of the bytes before it.
	entryCRCOff = 28

	formatVersion = 1

	// The limits keep every file below 2.3 GiB and every entry number, plus
	// one, inside a u32 slot or prev field.
	maxSlotCount      = 1 << 26
	maxEntriesPerFile = 1 << 26

	fileExt    = ".kix"
	tmpSuffix  = ".tmp"
	nameDigits = 20 // %020d holds any uint64
)

var (
	headerMagic = [8]byte{'C', 'F', 'L', 'X', 'K', 'I', 'X', 'H'}
	footerMagic = [8]byte{'C', 'F', 'L', 'X', 'K', 'I', 'X', 'F'}
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
	le          = binary.LittleEndian
)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// FNV-1a 64 parameters (hash/fnv uses the same; inlined to avoid an
// allocation per key).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashKey is the stored key hash: fmix64(FNV-1a-64(key)). FNV alone leaves
// keys that differ only in the last byte close together in the high bits,
// which pick the slot; the finalizer spreads them.
func hashKey(key []byte) uint64 {
	h := uint64(fnvOffset64)
	for _, c := range key {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return fmix64(h)
}

// fmix64 is MurmurHash3's 64-bit finalizer (a bijection).
func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// geometry is the shape of one file: its slot count and entry capacity.
type geometry struct {
	slots   int64
	entries int64
}

func (g geometry) validate() error {
	if g.slots < 1 || g.slots > maxSlotCount {
		return fmt.Errorf("slot count %d not in [1, %d]", g.slots, maxSlotCount)
	}
	if g.entries < 1 || g.entries > maxEntriesPerFile {
		return fmt.Errorf("entry capacity %d not in [1, %d]", g.entries, maxEntriesPerFile)
	}
	return nil
}

func (g geometry) slotOff(i int64) int64  { return headerBytes + i*slotBytes }
func (g geometry) entryOff(k int64) int64 { return g.slotOff(g.slots) + k*entryBytes }
func (g geometry) footerOff() int64       { return g.entryOff(g.entries) }
func (g geometry) size() int64            { return g.footerOff() + footerBytes }

// slotOf maps a key hash to a slot by multiply-shift, which uses the high
// bits of h and works for any slot count.
func (g geometry) slotOf(h uint64) int64 {
	hi, _ := bits.Mul64(h, uint64(g.slots))
	return int64(hi)
}

// entry is one decoded 32-byte entry.
type entry struct {
	hash    uint64
	phys    uint64
	storeMs int64
	prev    uint32 // 1 + number of the previous entry in the chain; 0 = end
}

func (e entry) put(b []byte) {
	le.PutUint64(b[0:], e.hash)
	le.PutUint64(b[8:], e.phys)
	le.PutUint64(b[16:], uint64(e.storeMs))
	le.PutUint32(b[24:], e.prev)
	le.PutUint32(b[entryCRCOff:], checksum(b[:entryCRCOff]))
}

// getEntry decodes b; ok is false when the CRC does not match (a torn,
// never-written or damaged entry).
func getEntry(b []byte) (e entry, ok bool) {
	b = b[:entryBytes]
	e = entry{
		hash:    le.Uint64(b[0:]),
		phys:    le.Uint64(b[8:]),
		storeMs: int64(le.Uint64(b[16:])),
		prev:    le.Uint32(b[24:]),
	}
	return e, le.Uint32(b[entryCRCOff:]) == checksum(b[:entryCRCOff])
}

// header is the decoded file header.
type header struct {
	geo   geometry
	first uint64
}

func (h header) put(b []byte) {
	clear(b[:headerBytes])
	copy(b, headerMagic[:])
	le.PutUint32(b[8:], formatVersion)
	le.PutUint32(b[12:], uint32(h.geo.slots))
	le.PutUint32(b[16:], uint32(h.geo.entries))
	le.PutUint64(b[24:], h.first)
	le.PutUint32(b[crcOff:], checksum(b[:crcOff]))
}

func getHeader(b []byte) (header, error) {
	b = b[:headerBytes]
	if [8]byte(b[:8]) != headerMagic {
		return header{}, fmt.Errorf("bad magic %q", b[:8])
	}
	if got, want := le.Uint32(b[crcOff:]), checksum(b[:crcOff]); got != want {
		return header{}, fmt.Errorf("header CRC %#08x, want %#08x", got, want)
	}
	if v := le.Uint32(b[8:]); v != formatVersion {
		return header{}, fmt.Errorf("format version %d, want %d", v, formatVersion)
	}
	if !allZero(b[20:24]) || !allZero(b[32:crcOff]) {
		return header{}, errors.New("reserved header bytes are not zero")
	}
	h := header{
		geo:   geometry{slots: int64(le.Uint32(b[12:])), entries: int64(le.Uint32(b[16:]))},
		first: le.Uint64(b[24:]),
	}
	return h, h.geo.validate()
}

// footer is the decoded seal of a full file.
type footer struct {
	used         int64
	first        uint64
	lastPhys     uint64
	minMs, maxMs int64
}

func (f footer) put(b []byte) {
	clear(b[:footerBytes])
	copy(b, footerMagic[:])
	le.PutUint32(b[8:], uint32(f.used))
	le.PutUint64(b[16:], f.first)
	le.PutUint64(b[24:], f.lastPhys)
	le.PutUint64(b[32:], uint64(f.minMs))
	le.PutUint64(b[40:], uint64(f.maxMs))
	le.PutUint32(b[crcOff:], checksum(b[:crcOff]))
}

func getFooter(b []byte) (footer, error) {
	b = b[:footerBytes]
	if [8]byte(b[:8]) != footerMagic {
		return footer{}, fmt.Errorf("bad footer magic %q (a file that is not the last must be full and sealed)", b[:8])
	}
	if got, want := le.Uint32(b[crcOff:]), checksum(b[:crcOff]); got != want {
		return footer{}, fmt.Errorf("footer CRC %#08x, want %#08x", got, want)
	}
	if !allZero(b[12:16]) || !allZero(b[48:crcOff]) {
		return footer{}, errors.New("reserved footer bytes are not zero")
	}
	return footer{
		used:     int64(le.Uint32(b[8:])),
		first:    le.Uint64(b[16:]),
		lastPhys: le.Uint64(b[24:]),
		minMs:    int64(le.Uint64(b[32:])),
		maxMs:    int64(le.Uint64(b[40:])),
	}, nil
}

// fileName is the base name of the file whose entry 0 has offset first.
func fileName(first uint64) string { return fmt.Sprintf("%020d%s", first, fileExt) }

// parseName is the inverse of fileName; it accepts nothing else.
func parseName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, fileExt)
	if !ok || len(digits) != nameDigits {
		return 0, false
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	first, err := strconv.ParseUint(digits, 10, 64)
	return first, err == nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// window is an inclusive store-time range in unix milliseconds.
type window struct{ lo, hi int64 }

// newWindow follows Lookup's convention that (0, 0) means any time.
func newWindow(begin, end int64) window {
	if begin == 0 && end == 0 {
		return window{math.MinInt64, math.MaxInt64}
	}
	return window{begin, end}
}

func (w window) has(ms int64) bool { return w.lo <= ms && ms <= w.hi }
