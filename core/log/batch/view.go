package batch

import (
	"bytes"
	"fmt"
	"hash/crc32"
)

// View is a validated message inside a batch. Its accessors read the batch
// bytes directly, and those returning []byte return subslices of them,
// capped so that appending to one cannot overwrite the batch. A View and its
// slices are valid as long as the batch bytes are; the slices must not be
// modified.
type View struct {
	b   []byte // the message, exactly its total length
	pos int
	// Offsets in b where variable fields start, recorded by validation so
	// that the accessors need no bounds checks of their own.
	topic, tags, keys, props, dests, body int
}

// DestinationView is a destination read in place; Topic aliases the batch.
type DestinationView struct {
	Topic       []byte
	QueueID     uint32
	QueueOffset uint64
	TagHash     int64
}

// Pos returns the offset of the message from the start of its batch.
func (v View) Pos() int { return v.pos }

// Len returns the total length of the message, without padding.
func (v View) Len() int { return len(v.b) }

// ID returns the message id.
func (v View) ID() [16]byte { return [16]byte(v.b[offID : offID+16]) }

// Flag returns RocketMQ's user flag.
func (v View) Flag() uint32 { return le.Uint32(v.b[offFlag:]) }

// SysFlag returns RocketMQ's sys flag bits.
func (v View) SysFlag() uint32 { return le.Uint32(v.b[offSysFlag:]) }

// BornUnixMs returns the time the producer created the message.
func (v View) BornUnixMs() int64 { return int64(le.Uint64(v.b[offBorn:])) }

// ReconsumeTimes returns how many times the message was consumed again.
func (v View) ReconsumeTimes() uint32 { return le.Uint32(v.b[offReconsume:]) }

// BornHost returns the producer's address, possibly empty.
func (v View) BornHost() []byte { return v.string16(fixedBytes) }

// Topic returns the topic the producer sent the message to.
func (v View) Topic() []byte { return v.string16(v.topic) }

// Tags returns the message tags, possibly empty.
func (v View) Tags() []byte { return v.string16(v.tags) }

// NumKeys returns the number of keys.
func (v View) NumKeys() int { return v.u16(v.keys) }

// Keys calls yield for each key in order until yield returns false. It can
// be ranged over: for k := range v.Keys.
func (v View) Keys(yield func(key []byte) bool) {
	off := v.keys + 2
	for range v.NumKeys() {
		k := v.string16(off)
		if !yield(k) {
			return
		}
		off += 2 + len(k)
	}
}

// NumProperties returns the number of properties.
func (v View) NumProperties() int { return v.u16(v.props) }

// Properties calls yield for each property in order until yield returns
// false. It can be ranged over: for k, val := range v.Properties.
func (v View) Properties(yield func(key, value []byte) bool) {
	off := v.props + 2
	for range v.NumProperties() {
		k := v.string16(off)
		off += 2 + len(k)
		val := v.string32(off)
		off += 4 + len(val)
		if !yield(k, val) {
			return
		}
	}
}

// NumDestinations returns the number of destinations, at least 1.
func (v View) NumDestinations() int { return v.u16(v.dests) }

// Destination returns destination i. It walks the i destinations before it,
// so use Destinations to visit them all. It panics if i is out of range.
func (v View) Destination(i int) DestinationView {
	if i < 0 || i >= v.NumDestinations() {
		panic(fmt.Sprintf("batch: destination %d out of range [0, %d)", i, v.NumDestinations()))
	}
	d, _ := v.destination(v.destAt(i))
	return d
}

// Destinations calls yield with each destination and its index until yield
// returns false. It can be ranged over: for i, d := range v.Destinations.
func (v View) Destinations(yield func(i int, d DestinationView) bool) {
	off := v.dests + 2
	for i := range v.NumDestinations() {
		var d DestinationView
		d, off = v.destination(off)
		if !yield(i, d) {
			return
		}
	}
}

// Body returns the message body, possibly empty.
func (v View) Body() []byte { return v.string32(v.body) }

// VerifyBody reports whether the body matches its CRC-32C.
func (v View) VerifyBody() bool {
	return crc32.Checksum(v.Body(), castagnoli) == le.Uint32(v.b[offCRC:])
}

// Decode verifies the body checksum and copies the message out of the
// batch. All its strings share one allocation.
func (v View) Decode() (Message, error) {
	if !v.VerifyBody() {
		return Message{}, fmt.Errorf("%w: body checksum mismatch", ErrCorrupt)
	}
	d := decoder{b: v.b, s: string(v.b[:v.body])}
	m := Message{
		ID:             v.ID(),
		Flag:           v.Flag(),
		SysFlag:        v.SysFlag(),
		BornUnixMs:     v.BornUnixMs(),
		ReconsumeTimes: v.ReconsumeTimes(),
		BornHost:       d.string16(fixedBytes),
		Topic:          d.string16(v.topic),
		Tags:           d.string16(v.tags),
		Keys:           d.keys(v.keys),
		Properties:     d.properties(v.props),
		Destinations:   d.destinations(v),
	}
	if body := v.Body(); len(body) > 0 {
		m.Body = bytes.Clone(body)
	}
	return m, nil
}

// destAt returns the offset in v.b of destination i.
func (v View) destAt(i int) int {
	off := v.dests + 2
	for range i {
		off += 2 + v.u16(off) + destTailBytes
	}
	return off
}

// destination reads the destination at off and returns the offset after it.
func (v View) destination(off int) (DestinationView, int) {
	topic := v.string16(off)
	off += 2 + len(topic)
	return DestinationView{
		Topic:       topic,
		QueueID:     le.Uint32(v.b[off:]),
		QueueOffset: le.Uint64(v.b[off+4:]),
		TagHash:     int64(le.Uint64(v.b[off+12:])),
	}, off + destTailBytes
}

func (v View) u16(off int) int { return int(le.Uint16(v.b[off:])) }

func (v View) string16(off int) []byte {
	end := off + 2 + v.u16(off)
	return v.b[off+2 : end : end]
}

func (v View) string32(off int) []byte {
	end := off + 4 + int(le.Uint32(v.b[off:]))
	return v.b[off+4 : end : end]
}

// decoder copies fields out of a validated message b. Its strings are
// substrings of s, one copy of b up to the body, so that decoding costs a
// single string allocation however many strings the message has.
type decoder struct {
	b []byte
	s string
}

func (d decoder) string16(off int) string {
	n := int(le.Uint16(d.b[off:]))
	return d.s[off+2 : off+2+n]
}

func (d decoder) keys(off int) []string {
	n := int(le.Uint16(d.b[off:]))
	if n == 0 {
		return nil
	}
	keys := make([]string, n)
	off += 2
	for i := range keys {
		keys[i] = d.string16(off)
		off += 2 + len(keys[i])
	}
	return keys
}

func (d decoder) properties(off int) []Property {
	n := int(le.Uint16(d.b[off:]))
	if n == 0 {
		return nil
	}
	props := make([]Property, n)
	off += 2
	for i := range props {
		p := &props[i]
		p.Key = d.string16(off)
		off += 2 + len(p.Key)
		vlen := int(le.Uint32(d.b[off:]))
		p.Value = d.s[off+4 : off+4+vlen]
		off += 4 + vlen
	}
	return props
}

func (d decoder) destinations(v View) []Destination {
	dests := make([]Destination, v.NumDestinations())
	off := v.dests + 2
	for i := range dests {
		dv, next := v.destination(off)
		dests[i] = Destination{
			Topic:       d.string16(off),
			QueueID:     dv.QueueID,
			QueueOffset: dv.QueueOffset,
			TagHash:     dv.TagHash,
		}
		off = next
	}
	return dests
}
