package batch

import (
	"errors"
	"hash/crc32"
)

// Format constants.
const (
	Magic       = 0x4243 // 'C','B' as little-endian bytes
	Version     = 1
	HeaderBytes = 24 // size of the batch header
	AlignBytes  = 8  // every message starts at a multiple of this from the batch start
)

// Limits enforced by both the Encoder and the decoders.
const (
	MaxBatchBytes   = 64 << 20 // whole batch, header and padding included
	MaxMessageBytes = 16 << 20 // one message's total length
	MaxDestinations = 4096
	MaxProperties   = 1024
	MaxKeys         = 64
	MaxStringBytes  = 1<<16 - 1 // strings with a u16 length prefix
)

// Layout of the message fixed part; see the package documentation.
const (
	offLength    = 0
	offCRC       = 4
	offID        = 8
	offFlag      = 24
	offSysFlag   = 28
	offBorn      = 32
	offReconsume = 40
	offReserved  = 44
	fixedBytes   = 48

	// destTailBytes is what follows a destination's topic: queue id,
	// queue offset, tag hash.
	destTailBytes = 4 + 8 + 8
	// minMessageBytes: empty strings, no keys or properties, one destination
	// with an empty topic, empty body.
	minMessageBytes = fixedBytes + 3*2 + 2 + 2 + 2 + 2 + destTailBytes + 4
)

// Errors returned, wrapped with details, by the decoders and the Encoder.
var (
	ErrTruncated   = errors.New("batch: truncated")
	ErrBadMagic    = errors.New("batch: bad magic")
	ErrBadVersion  = errors.New("batch: unsupported version")
	ErrUnknownKind = errors.New("batch: unknown kind")
	ErrTooLarge    = errors.New("batch: too large")
	ErrCorrupt     = errors.New("batch: corrupt")
	// ErrNoDestination is returned by Encoder.Add for a message without
	// destinations; a decoder reports the same defect as ErrCorrupt.
	ErrNoDestination = errors.New("batch: message has no destination")
)

// Kind says what a batch holds.
type Kind uint8

// KindMessages is the only kind defined so far.
const KindMessages Kind = 1

// Header is the decoded batch header.
type Header struct {
	Kind        Kind
	Count       uint32
	BatchID     uint64
	StoreUnixMs int64
}

// Destination is a (topic, queue) that indexes a message.
type Destination struct {
	Topic       string
	QueueID     uint32
	QueueOffset uint64
	TagHash     int64
}

// Property is one message property; a message keeps them in order.
type Property struct {
	Key, Value string
}

// Message is one decoded message. Decoding leaves Keys, Properties and Body
// nil rather than empty.
type Message struct {
	ID             [16]byte
	Flag           uint32
	SysFlag        uint32
	BornUnixMs     int64
	ReconsumeTimes uint32
	BornHost       string
	Topic          string
	Tags           string
	Keys           []string
	Properties     []Property
	Destinations   []Destination
	Body           []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func alignUp(n int) int { return (n + AlignBytes - 1) &^ (AlignBytes - 1) }
