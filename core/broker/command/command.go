package command

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Constants of the format.
const (
	Magic       = 0x4343
	Version     = 1
	HeaderBytes = 16
	// MaxOffsets bounds the offsets in one commit command.
	MaxOffsets = 1 << 16
	// MaxNameBytes bounds topic and group names.
	MaxNameBytes = 255
)

// Kind says what a command does.
type Kind uint8

// The kinds.
const (
	KindCreateTopic   Kind = 1
	KindDeleteTopic   Kind = 2
	KindCommitOffsets Kind = 3
	KindSettle        Kind = 4
	KindSubscribe     Kind = 5
	KindUnsubscribe   Kind = 6
	KindRecords       Kind = 7
	KindSchedule      Kind = 8
	KindLockQueues    Kind = 9
)

// LockOp is what a lock command does.
type LockOp uint8

// The lock operations.
const (
	LockAcquire LockOp = 1 // take or renew, unless another owner's lease is live
	LockRelease LockOp = 2 // release the owner's own leases
)

// MaxLockQueues bounds the queues of one lock command.
const MaxLockQueues = 1 << 12

// LockQueue names a queue as a client sees it.
type LockQueue struct {
	Topic  string
	Broker string
	Queue  uint32
}

// SchedOp is what a schedule command does to a half message or a timer.
type SchedOp uint8

// The schedule operations.
const (
	SchedCommit   SchedOp = 1
	SchedRollback SchedOp = 2
	SchedChecked  SchedOp = 3
	SchedDrop     SchedOp = 4
)

// Sched is one schedule operation on the half message or timer stored at
// physical offset Phys; AtMs is the proposer's clock (for SchedChecked),
// carried in the entry so every replica applies the same time.
type Sched struct {
	Op   SchedOp
	Phys uint64
	AtMs int64
}

// RecordOp is what a record change does.
type RecordOp uint8

// The record operations.
const (
	RecordPut         RecordOp = 1
	RecordDelete      RecordOp = 2
	RecordPutIfAbsent RecordOp = 3 // keeps an existing value
)

// Limits of record commands.
const (
	MaxRecords = 1 << 12
	// MaxRecordKeyBytes keeps namespace, separator and key within bbolt's
	// 32 KiB key limit: broker.db refusing a committed record would stop
	// every replica.
	MaxRecordKeyBytes   = 32768 - 1 - MaxNameBytes
	MaxRecordValueBytes = 4 << 20
)

// Outcome of a settled delivery.
type Outcome uint8

// The outcomes.
const (
	Acked        Outcome = 1
	Failed       Outcome = 2
	DeadLettered Outcome = 3
)

// Errors.
var (
	ErrNotCommand = errors.New("command: not a command entry")
	ErrCorrupt    = errors.New("command: corrupt")
)

// Command is one decoded control entry; the fields used depend on Kind.
type Command struct {
	Kind    Kind
	ID      uint64
	Topic   string // create, delete
	Queues  uint32 // create
	Perm    uint32 // create
	Group   string // commit offsets
	Offsets []Offset

	Subscription  string   // settle, subscribe, unsubscribe
	Settles       []Settle // settle
	Queue         uint32   // subscribe (with Topic)
	StartOffset   uint64   // subscribe
	AckWaitMs     uint32   // subscribe
	MaxDeliveries uint32   // subscribe
	DeadLetter    string   // subscribe

	Records []Record // records

	Scheds []Sched // schedule

	// lock queues (with Group): the owner, the proposer's clock and the
	// lease length, carried so every replica decides alike.
	LockOp     LockOp
	Owner      string
	AtMs       int64
	LeaseMs    uint32
	LockQueues []LockQueue
}

// Record is one change to the replicated key/value records: a namespace
// (who owns it, e.g. "mqtt.retained"), a key and a value.
type Record struct {
	Op        RecordOp
	Namespace string
	Key       string
	Value     []byte
}

// Settle is the outcome of one delivery of a subscription.
type Settle struct {
	Offset  uint64
	Outcome Outcome
}

// Offset is one consumer offset to commit.
type Offset struct {
	Topic  string
	Queue  uint32
	Offset uint64
}

var le = binary.LittleEndian

// Encode appends c's encoding to dst.
func Encode(dst []byte, c *Command) ([]byte, error) {
	dst = le.AppendUint16(dst, Magic)
	dst = append(dst, Version, byte(c.Kind), 0, 0, 0, 0)
	dst = le.AppendUint64(dst, c.ID)
	var err error
	switch c.Kind {
	case KindCreateTopic:
		if dst, err = putString(dst, c.Topic); err != nil {
			return nil, err
		}
		dst = le.AppendUint32(dst, c.Queues)
		dst = le.AppendUint32(dst, c.Perm)
	case KindDeleteTopic:
		dst, err = putString(dst, c.Topic)
	case KindCommitOffsets:
		if len(c.Offsets) > MaxOffsets {
			return nil, fmt.Errorf("command: %d offsets, over %d", len(c.Offsets), MaxOffsets)
		}
		if dst, err = putString(dst, c.Group); err != nil {
			return nil, err
		}
		dst = le.AppendUint32(dst, uint32(len(c.Offsets)))
		for _, o := range c.Offsets {
			if dst, err = putString(dst, o.Topic); err != nil {
				return nil, err
			}
			dst = le.AppendUint32(dst, o.Queue)
			dst = le.AppendUint64(dst, o.Offset)
		}
	case KindSettle:
		if len(c.Settles) > MaxOffsets {
			return nil, fmt.Errorf("command: %d settles, over %d", len(c.Settles), MaxOffsets)
		}
		if dst, err = putString(dst, c.Subscription); err != nil {
			return nil, err
		}
		dst = le.AppendUint32(dst, uint32(len(c.Settles)))
		for _, st := range c.Settles {
			dst = le.AppendUint64(dst, st.Offset)
			dst = append(dst, byte(st.Outcome))
		}
	case KindSubscribe:
		for _, s := range []string{c.Subscription, c.Topic} {
			if dst, err = putString(dst, s); err != nil {
				return nil, err
			}
		}
		dst = le.AppendUint32(dst, c.Queue)
		dst = le.AppendUint64(dst, c.StartOffset)
		dst = le.AppendUint32(dst, c.AckWaitMs)
		dst = le.AppendUint32(dst, c.MaxDeliveries)
		dst, err = putString(dst, c.DeadLetter)
	case KindUnsubscribe:
		dst, err = putString(dst, c.Subscription)
	case KindRecords:
		if len(c.Records) == 0 || len(c.Records) > MaxRecords {
			return nil, fmt.Errorf("command: %d records, want 1 to %d", len(c.Records), MaxRecords)
		}
		dst = le.AppendUint32(dst, uint32(len(c.Records)))
		for _, r := range c.Records {
			if r.Op < RecordPut || r.Op > RecordPutIfAbsent {
				return nil, fmt.Errorf("command: record op %d", r.Op)
			}
			if len(r.Key) > MaxRecordKeyBytes || len(r.Value) > MaxRecordValueBytes {
				return nil, fmt.Errorf("command: record of %d+%d bytes, over %d+%d", len(r.Key), len(r.Value), MaxRecordKeyBytes, MaxRecordValueBytes)
			}
			dst = append(dst, byte(r.Op))
			if dst, err = putString(dst, r.Namespace); err != nil {
				return nil, err
			}
			dst = le.AppendUint16(dst, uint16(len(r.Key)))
			dst = append(dst, r.Key...)
			dst = le.AppendUint32(dst, uint32(len(r.Value)))
			dst = append(dst, r.Value...)
		}
	case KindSchedule:
		if len(c.Scheds) > MaxOffsets {
			return nil, fmt.Errorf("command: %d schedule ops, over %d", len(c.Scheds), MaxOffsets)
		}
		dst = le.AppendUint32(dst, uint32(len(c.Scheds)))
		for _, op := range c.Scheds {
			if op.Op < SchedCommit || op.Op > SchedDrop {
				return nil, fmt.Errorf("command: schedule op %d", op.Op)
			}
			dst = append(dst, byte(op.Op))
			dst = le.AppendUint64(dst, op.Phys)
			dst = le.AppendUint64(dst, uint64(op.AtMs))
		}
	case KindLockQueues:
		if c.LockOp < LockAcquire || c.LockOp > LockRelease {
			return nil, fmt.Errorf("command: lock op %d", c.LockOp)
		}
		if len(c.LockQueues) > MaxLockQueues {
			return nil, fmt.Errorf("command: %d lock queues, over %d", len(c.LockQueues), MaxLockQueues)
		}
		dst = append(dst, byte(c.LockOp))
		for _, s := range []string{c.Group, c.Owner} {
			if dst, err = putString(dst, s); err != nil {
				return nil, err
			}
		}
		dst = le.AppendUint64(dst, uint64(c.AtMs))
		dst = le.AppendUint32(dst, c.LeaseMs)
		dst = le.AppendUint32(dst, uint32(len(c.LockQueues)))
		for _, q := range c.LockQueues {
			for _, s := range []string{q.Topic, q.Broker} {
				if dst, err = putString(dst, s); err != nil {
					return nil, err
				}
			}
			dst = le.AppendUint32(dst, q.Queue)
		}
	default:
		return nil, fmt.Errorf("command: unknown kind %d", c.Kind)
	}
	return dst, err
}

func putString(dst []byte, s string) ([]byte, error) {
	if len(s) > MaxNameBytes {
		return nil, fmt.Errorf("command: name of %d bytes, over %d", len(s), MaxNameBytes)
	}
	dst = le.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...), nil
}

// IsCommand reports whether data starts like a command entry.
func IsCommand(data []byte) bool { return len(data) >= 2 && le.Uint16(data) == Magic }

// Decode decodes a whole command entry.
func Decode(b []byte) (Command, error) {
	if !IsCommand(b) {
		return Command{}, ErrNotCommand
	}
	if len(b) < HeaderBytes || b[2] != Version || le.Uint32(b[4:]) != 0 {
		return Command{}, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	c := Command{Kind: Kind(b[3]), ID: le.Uint64(b[8:])}
	r := reader{b: b[HeaderBytes:]}
	switch c.Kind {
	case KindCreateTopic:
		c.Topic, c.Queues, c.Perm = r.str(), r.u32(), r.u32()
	case KindDeleteTopic:
		c.Topic = r.str()
	case KindCommitOffsets:
		c.Group = r.str()
		n := r.u32()
		// Each offset takes at least 14 bytes: check before allocating.
		if n > MaxOffsets || int(n)*14 > len(r.b) {
			return Command{}, fmt.Errorf("%w: %d offsets", ErrCorrupt, n)
		}
		c.Offsets = make([]Offset, n)
		for k := range c.Offsets {
			c.Offsets[k] = Offset{Topic: r.str(), Queue: r.u32(), Offset: r.u64()}
		}
	case KindSettle:
		c.Subscription = r.str()
		n := r.u32()
		if n > MaxOffsets || int(n)*9 > len(r.b) {
			return Command{}, fmt.Errorf("%w: %d settles", ErrCorrupt, n)
		}
		c.Settles = make([]Settle, n)
		for k := range c.Settles {
			c.Settles[k] = Settle{Offset: r.u64(), Outcome: Outcome(r.u8())}
			if o := c.Settles[k].Outcome; o < Acked || o > DeadLettered {
				return Command{}, fmt.Errorf("%w: outcome %d", ErrCorrupt, o)
			}
		}
	case KindSubscribe:
		c.Subscription, c.Topic = r.str(), r.str()
		c.Queue, c.StartOffset = r.u32(), r.u64()
		c.AckWaitMs, c.MaxDeliveries = r.u32(), r.u32()
		c.DeadLetter = r.str()
	case KindUnsubscribe:
		c.Subscription = r.str()
	case KindRecords:
		n := r.u32()
		// Each record takes at least 9 bytes: check before allocating.
		if n == 0 || n > MaxRecords || int(n)*9 > len(r.b) {
			return Command{}, fmt.Errorf("%w: %d records", ErrCorrupt, n)
		}
		c.Records = make([]Record, n)
		for k := range c.Records {
			rec := Record{Op: RecordOp(r.u8()), Namespace: r.str()}
			kn := int(r.u16())
			if kn > MaxRecordKeyBytes {
				return Command{}, fmt.Errorf("%w: record key of %d bytes", ErrCorrupt, kn)
			}
			rec.Key = string(r.bytes(kn))
			vn := r.u32()
			if vn > MaxRecordValueBytes {
				return Command{}, fmt.Errorf("%w: record value of %d bytes", ErrCorrupt, vn)
			}
			rec.Value = append([]byte(nil), r.bytes(int(vn))...)
			if r.err == nil && (rec.Op < RecordPut || rec.Op > RecordPutIfAbsent) {
				return Command{}, fmt.Errorf("%w: record op %d", ErrCorrupt, rec.Op)
			}
			c.Records[k] = rec
		}
	case KindSchedule:
		n := r.u32()
		// Each op takes 17 bytes: check before allocating.
		if n > MaxOffsets || int(n)*17 > len(r.b) {
			return Command{}, fmt.Errorf("%w: %d schedule ops", ErrCorrupt, n)
		}
		if n > 0 {
			c.Scheds = make([]Sched, n)
		}
		for k := range c.Scheds {
			op := Sched{Op: SchedOp(r.u8()), Phys: r.u64(), AtMs: int64(r.u64())}
			if op.Op < SchedCommit || op.Op > SchedDrop {
				return Command{}, fmt.Errorf("%w: schedule op %d", ErrCorrupt, op.Op)
			}
			c.Scheds[k] = op
		}
	case KindLockQueues:
		c.LockOp = LockOp(r.u8())
		if r.err == nil && (c.LockOp < LockAcquire || c.LockOp > LockRelease) {
			return Command{}, fmt.Errorf("%w: lock op %d", ErrCorrupt, c.LockOp)
		}
		c.Group, c.Owner = r.str(), r.str()
		c.AtMs, c.LeaseMs = int64(r.u64()), r.u32()
		n := r.u32()
		// Each queue takes at least 8 bytes: check before allocating.
		if n > MaxLockQueues || int(n)*8 > len(r.b) {
			return Command{}, fmt.Errorf("%w: %d lock queues", ErrCorrupt, n)
		}
		if n > 0 {
			c.LockQueues = make([]LockQueue, n)
		}
		for k := range c.LockQueues {
			c.LockQueues[k] = LockQueue{Topic: r.str(), Broker: r.str(), Queue: r.u32()}
		}
	default:
		return Command{}, fmt.Errorf("%w: unknown kind %d", ErrCorrupt, c.Kind)
	}
	if r.err != nil {
		return Command{}, r.err
	}
	if len(r.b) != 0 {
		return Command{}, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	return c, nil
}

// reader consumes fields and remembers the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) bool {
	if r.err == nil && len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	return r.err == nil
}

func (r *reader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := le.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

// bytes returns the next n bytes (aliasing the input).
func (r *reader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := le.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := le.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) str() string {
	if !r.need(2) {
		return ""
	}
	n := int(le.Uint16(r.b))
	if n > MaxNameBytes {
		r.err = fmt.Errorf("%w: name of %d bytes", ErrCorrupt, n)
		return ""
	}
	if !r.need(2 + n) {
		return ""
	}
	s := string(r.b[2 : 2+n])
	r.b = r.b[2+n:]
	return s
}

// ProposalID returns the proposal id of any broker entry, command or
// message batch: both keep it at bytes 8..16 behind their magic.
func ProposalID(data []byte) (uint64, bool) {
	if len(data) < HeaderBytes {
		return 0, false
	}
	switch le.Uint16(data) {
	case Magic, batchMagic:
		return le.Uint64(data[8:]), true
	}
	return 0, false
}

// batchMagic is core/log/batch.Magic; this leaf package does not import it.
const batchMagic = 0x4243
