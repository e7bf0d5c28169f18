package batch

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

var le = binary.LittleEndian

// Encoder builds one batch at a time into a buffer it reuses across batches.
// The zero value is ready to use, as if Reset(0, 0) had been called.
type Encoder struct {
	buf   []byte
	count uint32
}

// Reset starts a new, empty batch, keeping the buffer's capacity.
func (e *Encoder) Reset(batchID uint64, storeUnixMs int64) {
	h := Header{Kind: KindMessages, BatchID: batchID, StoreUnixMs: storeUnixMs}
	e.buf = appendHeader(e.buf[:0], h)
	e.count = 0
}

// Add appends m to the batch. It returns an error wrapping ErrTooLarge or
// ErrNoDestination, and leaves the batch unchanged, if m breaks a limit or
// would make the batch exceed MaxBatchBytes. Any message within the limits
// fits an empty batch, so a proposer that wants to tell a full batch from a
// bad message checks Len() + EncodedSize(m) <= MaxBatchBytes first.
func (e *Encoder) Add(m *Message) error {
	n, err := checkMessage(m)
	if err != nil {
		return err
	}
	e.start()
	if size := len(e.buf) + alignUp(n); size > MaxBatchBytes {
		return fmt.Errorf("%w: batch would be %d bytes, limit %d", ErrTooLarge, size, MaxBatchBytes)
	}
	e.buf = appendMessage(slices.Grow(e.buf, alignUp(n)), m, n)
	e.count++
	le.PutUint32(e.buf[4:], e.count)
	return nil
}

// Len returns the size of the batch so far, header included.
func (e *Encoder) Len() int { return max(len(e.buf), HeaderBytes) }

// Count returns the number of messages added since Reset.
func (e *Encoder) Count() int { return int(e.count) }

// Bytes returns the encoded batch. It aliases the Encoder's buffer, so it is
// valid until the next Reset.
func (e *Encoder) Bytes() []byte {
	e.start()
	return e.buf
}

// start writes the header of a zero Encoder.
func (e *Encoder) start() {
	if len(e.buf) == 0 {
		e.Reset(0, 0)
	}
}

// EncodedSize returns the exact number of bytes m takes in a batch, padding
// included. It does not check m against the limits; Encoder.Add does.
func EncodedSize(m *Message) int { return alignUp(int(messageLen(m))) }

func appendHeader(b []byte, h Header) []byte {
	b = le.AppendUint16(b, Magic)
	b = append(b, Version, byte(h.Kind))
	b = le.AppendUint32(b, h.Count)
	b = le.AppendUint64(b, h.BatchID)
	return le.AppendUint64(b, uint64(h.StoreUnixMs))
}

// checkMessage checks m against the limits and returns its length without
// padding.
func checkMessage(m *Message) (int, error) {
	switch {
	case len(m.Destinations) == 0:
		return 0, ErrNoDestination
	case len(m.Destinations) > MaxDestinations:
		return 0, tooMany("destinations", len(m.Destinations), MaxDestinations)
	case len(m.Keys) > MaxKeys:
		return 0, tooMany("keys", len(m.Keys), MaxKeys)
	case len(m.Properties) > MaxProperties:
		return 0, tooMany("properties", len(m.Properties), MaxProperties)
	}
	if err := checkShortStrings(m); err != nil {
		return 0, err
	}
	n := messageLen(m)
	if n > MaxMessageBytes {
		return 0, fmt.Errorf("%w: message is %d bytes, limit %d", ErrTooLarge, n, MaxMessageBytes)
	}
	return int(n), nil
}

// checkShortStrings checks the strings that have a u16 length prefix.
func checkShortStrings(m *Message) error {
	for _, s := range [...]string{m.BornHost, m.Topic, m.Tags} {
		if len(s) > MaxStringBytes {
			return tooMany("string bytes", len(s), MaxStringBytes)
		}
	}
	for _, k := range m.Keys {
		if len(k) > MaxStringBytes {
			return tooMany("key bytes", len(k), MaxStringBytes)
		}
	}
	for _, p := range m.Properties {
		if len(p.Key) > MaxStringBytes {
			return tooMany("property key bytes", len(p.Key), MaxStringBytes)
		}
	}
	for _, d := range m.Destinations {
		if len(d.Topic) > MaxStringBytes {
			return tooMany("destination topic bytes", len(d.Topic), MaxStringBytes)
		}
	}
	return nil
}

func tooMany(what string, n, limit int) error {
	return fmt.Errorf("%w: %d %s, limit %d", ErrTooLarge, n, what, limit)
}

// messageLen is the length of m's encoding without padding. It sums in
// uint64 so that no message, however large, can overflow it.
func messageLen(m *Message) uint64 {
	// Fixed part, three string prefixes, three counts, body prefix.
	n := uint64(fixedBytes + 3*2 + 3*2 + 4)
	n += uint64(len(m.BornHost)) + uint64(len(m.Topic)) + uint64(len(m.Tags))
	for _, k := range m.Keys {
		n += 2 + uint64(len(k))
	}
	for _, p := range m.Properties {
		n += 2 + 4 + uint64(len(p.Key)) + uint64(len(p.Value))
	}
	for _, d := range m.Destinations {
		n += 2 + destTailBytes + uint64(len(d.Topic))
	}
	return n + uint64(len(m.Body))
}

var zeros [AlignBytes]byte

// appendMessage appends m, whose length without padding is n, and its padding.
func appendMessage(b []byte, m *Message, n int) []byte {
	b = le.AppendUint32(b, uint32(n))
	b = le.AppendUint32(b, crc32.Checksum(m.Body, castagnoli))
	b = append(b, m.ID[:]...)
	b = le.AppendUint32(b, m.Flag)
	b = le.AppendUint32(b, m.SysFlag)
	b = le.AppendUint64(b, uint64(m.BornUnixMs))
	b = le.AppendUint32(b, m.ReconsumeTimes)
	b = le.AppendUint32(b, 0) // reserved
	b = appendString16(b, m.BornHost)
	b = appendString16(b, m.Topic)
	b = appendString16(b, m.Tags)
	b = le.AppendUint16(b, uint16(len(m.Keys)))
	for _, k := range m.Keys {
		b = appendString16(b, k)
	}
	b = le.AppendUint16(b, uint16(len(m.Properties)))
	for _, p := range m.Properties {
		b = appendString16(b, p.Key)
		b = le.AppendUint32(b, uint32(len(p.Value)))
		b = append(b, p.Value...)
	}
	b = le.AppendUint16(b, uint16(len(m.Destinations)))
	for _, d := range m.Destinations {
		b = appendString16(b, d.Topic)
		b = le.AppendUint32(b, d.QueueID)
		b = le.AppendUint64(b, d.QueueOffset)
		b = le.AppendUint64(b, uint64(d.TagHash))
	}
	b = le.AppendUint32(b, uint32(len(m.Body)))
	b = append(b, m.Body...)
	return append(b, zeros[:alignUp(n)-n]...)
}

func appendString16(b []byte, s string) []byte {
	b = le.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}
