package log

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Sizes of the fixed parts of the on-disk format (see doc.go).
const (
	SegmentHeaderBytes = 64
	RecordHeaderBytes  = 32
	idxHeaderBytes     = 32
	idxEntryBytes      = 16

	segmentMagic  = "CFXS"
	idxMagic      = "CFXI"
	recordMagic0  = 'C'
	recordMagic1  = 'X'
	recordEntry   = 1
	formatVersion = 1
)

// ErrCorrupt says that data which had been made durable is damaged. The log
// refuses to guess: the operator must repair or re-replicate the node.
var ErrCorrupt = errors.New("log: corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func align8(n int64) int64 { return (n + 7) &^ 7 }

// recordSize is the space a record with dataLen bytes of data takes.
func recordSize(dataLen int) int64 { return RecordHeaderBytes + align8(int64(dataLen)) }

type segHeader struct {
	base, size, first, prevTerm uint64
	createdUnixMs               int64
	start                       uint64 // position of the first record
}

func (h segHeader) encode(b []byte) {
	_ = b[SegmentHeaderBytes-1]
	clear(b[:SegmentHeaderBytes])
	copy(b[0:4], segmentMagic)
	binary.LittleEndian.PutUint16(b[4:], formatVersion)
	binary.LittleEndian.PutUint64(b[8:], h.base)
	binary.LittleEndian.PutUint64(b[16:], h.size)
	binary.LittleEndian.PutUint64(b[24:], h.first)
	binary.LittleEndian.PutUint64(b[32:], h.prevTerm)
	binary.LittleEndian.PutUint64(b[40:], uint64(h.createdUnixMs))
	binary.LittleEndian.PutUint64(b[48:], h.start)
	binary.LittleEndian.PutUint32(b[60:], crc(b[:60]))
}

var errBadHeader = errors.New("bad segment header")

func decodeSegHeader(b []byte) (segHeader, error) {
	if len(b) < SegmentHeaderBytes {
		return segHeader{}, fmt.Errorf("%w: %d bytes", errBadHeader, len(b))
	}
	if string(b[0:4]) != segmentMagic {
		return segHeader{}, fmt.Errorf("%w: magic %q", errBadHeader, b[0:4])
	}
	if got, want := binary.LittleEndian.Uint32(b[60:]), crc(b[:60]); got != want {
		return segHeader{}, fmt.Errorf("%w: crc %08x, want %08x", errBadHeader, got, want)
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != formatVersion {
		return segHeader{}, fmt.Errorf("%w: version %d", errBadHeader, v)
	}
	return segHeader{
		base:          binary.LittleEndian.Uint64(b[8:]),
		size:          binary.LittleEndian.Uint64(b[16:]),
		first:         binary.LittleEndian.Uint64(b[24:]),
		prevTerm:      binary.LittleEndian.Uint64(b[32:]),
		createdUnixMs: int64(binary.LittleEndian.Uint64(b[40:])),
		start:         binary.LittleEndian.Uint64(b[48:]),
	}, nil
}

// recHeader is the decoded fixed part of a record.
type recHeader struct {
	entryType uint8
	length    uint32
	index     uint64
	term      uint64
}

// putRecord writes a record for (h, data) into dst, which must be exactly
// recordSize(len(data)) bytes, padding included.
func putRecord(dst []byte, h recHeader, data []byte) {
	dst[0], dst[1], dst[2], dst[3] = recordMagic0, recordMagic1, recordEntry, h.entryType
	binary.LittleEndian.PutUint32(dst[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(dst[12:], 0)
	binary.LittleEndian.PutUint64(dst[16:], h.index)
	binary.LittleEndian.PutUint64(dst[24:], h.term)
	n := copy(dst[RecordHeaderBytes:], data)
	clear(dst[RecordHeaderBytes+n:])
	binary.LittleEndian.PutUint32(dst[4:], crc(dst[8:RecordHeaderBytes+len(data)]))
}

// parseRecord validates the record at b[0:] (b runs to the end of the
// segment) and returns its header. It checks everything that can be checked
// without context: magic, type, length bounds and CRC.
func parseRecord(b []byte, maxEntryBytes int) (recHeader, error) {
	if len(b) < RecordHeaderBytes {
		return recHeader{}, errors.New("record header past the end of the segment")
	}
	if b[0] != recordMagic0 || b[1] != recordMagic1 || b[2] != recordEntry {
		if allZero(b[:RecordHeaderBytes]) {
			return recHeader{}, errEndOfLog
		}
		return recHeader{}, fmt.Errorf("bad record magic/type % x", b[0:3])
	}
	h := recHeader{
		entryType: b[3],
		length:    binary.LittleEndian.Uint32(b[8:]),
		index:     binary.LittleEndian.Uint64(b[16:]),
		term:      binary.LittleEndian.Uint64(b[24:]),
	}
	if int64(h.length) > int64(maxEntryBytes) {
		return recHeader{}, fmt.Errorf("record length %d over the maximum %d", h.length, maxEntryBytes)
	}
	if recordSize(int(h.length)) > int64(len(b)) {
		return recHeader{}, fmt.Errorf("record length %d runs past the end of the segment", h.length)
	}
	if got, want := binary.LittleEndian.Uint32(b[4:]), crc(b[8:RecordHeaderBytes+int(h.length)]); got != want {
		return recHeader{}, fmt.Errorf("record crc %08x, want %08x", got, want)
	}
	return h, nil
}

var errEndOfLog = errors.New("end of log")

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ent locates one entry inside its segment.
type ent struct {
	pos    uint32 // record position in the segment
	length uint32 // data length
	term   uint64
}

func (e ent) end() int64 { return int64(e.pos) + recordSize(int(e.length)) }

func encodeIdx(first uint64, ents []ent) []byte {
	b := make([]byte, idxHeaderBytes+idxEntryBytes*len(ents))
	tab := b[idxHeaderBytes:]
	for i, e := range ents {
		p := tab[i*idxEntryBytes:]
		binary.LittleEndian.PutUint32(p[0:], e.pos)
		binary.LittleEndian.PutUint32(p[4:], e.length)
		binary.LittleEndian.PutUint64(p[8:], e.term)
	}
	copy(b[0:4], idxMagic)
	binary.LittleEndian.PutUint32(b[4:], formatVersion)
	binary.LittleEndian.PutUint64(b[8:], first)
	binary.LittleEndian.PutUint64(b[16:], uint64(len(ents)))
	binary.LittleEndian.PutUint32(b[24:], crc(tab))
	binary.LittleEndian.PutUint32(b[28:], crc(b[:28]))
	return b
}

// decodeIdx checks an .idx image against its segment and returns its entries.
func decodeIdx(b []byte, first uint64, start, segSize int64) ([]ent, error) {
	if len(b) < idxHeaderBytes || string(b[0:4]) != idxMagic {
		return nil, errors.New("bad idx header")
	}
	if binary.LittleEndian.Uint32(b[28:]) != crc(b[:28]) {
		return nil, errors.New("idx header crc mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[4:]); v != formatVersion {
		return nil, fmt.Errorf("idx version %d", v)
	}
	if f := binary.LittleEndian.Uint64(b[8:]); f != first {
		return nil, fmt.Errorf("idx first index %d, segment's is %d", f, first)
	}
	n := binary.LittleEndian.Uint64(b[16:])
	if n > uint64(segSize/RecordHeaderBytes) || int64(len(b)) != idxHeaderBytes+int64(n)*idxEntryBytes {
		return nil, fmt.Errorf("idx count %d does not match its size %d", n, len(b))
	}
	tab := b[idxHeaderBytes:]
	if binary.LittleEndian.Uint32(b[24:]) != crc(tab) {
		return nil, errors.New("idx table crc mismatch")
	}
	ents := make([]ent, n)
	prevEnd, prevTerm := start, uint64(0)
	for i := range ents {
		p := tab[i*idxEntryBytes:]
		e := ent{
			pos:    binary.LittleEndian.Uint32(p[0:]),
			length: binary.LittleEndian.Uint32(p[4:]),
			term:   binary.LittleEndian.Uint64(p[8:]),
		}
		// A valid table is contiguous and in term order: anything else
		// would make reads return the wrong bytes.
		if int64(e.pos) != prevEnd || e.end() > segSize || e.term < prevTerm {
			return nil, fmt.Errorf("idx entry %d (pos %d len %d term %d) is inconsistent", i, e.pos, e.length, e.term)
		}
		prevEnd, prevTerm = e.end(), e.term
		ents[i] = e
	}
	return ents, nil
}
