package batch

import "fmt"

// ParseHeader decodes and checks the batch header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderBytes {
		return Header{}, fmt.Errorf("%w: header needs %d bytes, have %d", ErrTruncated, HeaderBytes, len(b))
	}
	if m := le.Uint16(b); m != Magic {
		return Header{}, fmt.Errorf("%w: %#04x", ErrBadMagic, m)
	}
	if b[2] != Version {
		return Header{}, fmt.Errorf("%w: %d", ErrBadVersion, b[2])
	}
	if k := Kind(b[3]); k != KindMessages {
		return Header{}, fmt.Errorf("%w: %d", ErrUnknownKind, k)
	}
	return Header{
		Kind:        KindMessages,
		Count:       le.Uint32(b[4:]),
		BatchID:     le.Uint64(b[8:]),
		StoreUnixMs: int64(le.Uint64(b[16:])),
	}, nil
}

// Iterator walks the messages of a batch without allocating. Use it as
//
//	var it batch.Iterator
//	if err := it.Init(b); err != nil { ... }
//	for it.Next() {
//		v := it.View()
//		...
//	}
//	if err := it.Err(); err != nil { ... }
//
// Each message is fully validated before Next returns true, except for its
// body checksum (see View.VerifyBody). Because validation is incremental, the
// messages before a defect are exposed before Err reports it: an applier that
// must be all-or-nothing walks the batch once to validate it, then again.
type Iterator struct {
	b    []byte
	hdr  Header
	pos  int    // offset of the next message
	seen uint32 // messages returned so far
	cur  View
	err  error
}

// Init starts iterating over batch b, which the Iterator only reads. An
// error from Init is also reported by Err.
func (it *Iterator) Init(b []byte) error {
	*it = Iterator{b: b, pos: HeaderBytes}
	it.hdr, it.err = ParseHeader(b)
	if it.err != nil {
		return it.err
	}
	if len(b) > MaxBatchBytes {
		it.err = fmt.Errorf("%w: batch is %d bytes, limit %d", ErrTooLarge, len(b), MaxBatchBytes)
		return it.err
	}
	// Reject an impossible count now rather than after walking the batch.
	if room := (len(b) - HeaderBytes) / alignUp(minMessageBytes); uint64(it.hdr.Count) > uint64(room) {
		it.err = fmt.Errorf("%w: %d bytes cannot hold %d messages", ErrTruncated, len(b), it.hdr.Count)
	}
	return it.err
}

// Header returns the batch header decoded by Init.
func (it *Iterator) Header() Header { return it.hdr }

// Next advances to the next message and reports whether there is one. It
// returns false at the end of the batch or on the first error; see Err.
func (it *Iterator) Next() bool {
	if it.err != nil {
		return false
	}
	if it.seen == it.hdr.Count {
		if it.pos != len(it.b) {
			it.err = fmt.Errorf("%w: %d bytes after the last of %d messages", ErrCorrupt, len(it.b)-it.pos, it.seen)
		}
		return false
	}
	v, err := parseMessage(it.b[it.pos:], it.pos)
	if err == nil {
		err = checkPadding(it.b[it.pos+v.Len():], alignUp(v.Len())-v.Len())
	}
	if err != nil {
		it.err = fmt.Errorf("%w (message %d at offset %d)", err, it.seen, it.pos)
		return false
	}
	it.cur = v
	it.pos += alignUp(v.Len())
	it.seen++
	return true
}

// View returns the current message. It is valid after Next returned true,
// for as long as the batch bytes are.
func (it *Iterator) View() View { return it.cur }

// Err returns the error that ended the iteration, or nil at a clean end.
func (it *Iterator) Err() error { return it.err }

func checkPadding(b []byte, n int) error {
	if len(b) < n {
		return fmt.Errorf("%w: padding needs %d bytes, have %d", ErrTruncated, n, len(b))
	}
	for _, c := range b[:n] {
		if c != 0 {
			return fmt.Errorf("%w: non-zero padding", ErrCorrupt)
		}
	}
	return nil
}

// DecodeMessage decodes the message at the start of b, as found at a
// message's physical offset; bytes after the message's total length are
// ignored. Unlike the Iterator it also checks the body checksum. The View's
// Pos is 0.
func DecodeMessage(b []byte) (Message, View, error) {
	v, err := parseMessage(b, 0)
	if err != nil {
		return Message{}, View{}, err
	}
	m, err := v.Decode()
	if err != nil {
		return Message{}, View{}, err
	}
	return m, v, nil
}

// SetQueueOffset overwrites, in place, the queue offset of destination
// destIndex of the message at offset msgPos of batch; msgPos must be the Pos
// of a View from iterating batch. The message there is validated first. The
// body checksum does not cover destinations, so it stays valid.
func SetQueueOffset(batch []byte, msgPos int, destIndex int, offset uint64) error {
	if msgPos < HeaderBytes || msgPos >= len(batch) || msgPos%AlignBytes != 0 {
		return fmt.Errorf("batch: no message can start at offset %d of a %d-byte batch", msgPos, len(batch))
	}
	v, err := parseMessage(batch[msgPos:], msgPos)
	if err != nil {
		return fmt.Errorf("%w (message at offset %d)", err, msgPos)
	}
	if destIndex < 0 || destIndex >= v.NumDestinations() {
		return fmt.Errorf("batch: destination %d out of range [0, %d)", destIndex, v.NumDestinations())
	}
	off := v.destAt(destIndex)
	le.PutUint64(v.b[off+2+v.u16(off)+4:], offset) // after the topic and queue id
	return nil
}

// parseMessage validates the message at the start of b, which lies at offset
// pos of its batch, and returns a View of it. Every length is checked against
// the bytes that remain and against the limits before it is used.
func parseMessage(b []byte, pos int) (View, error) {
	if len(b) < fixedBytes {
		return View{}, fmt.Errorf("%w: message needs %d bytes, have %d", ErrTruncated, fixedBytes, len(b))
	}
	n := le.Uint32(b[offLength:])
	switch {
	case n > MaxMessageBytes:
		return View{}, fmt.Errorf("%w: message is %d bytes, limit %d", ErrTooLarge, n, MaxMessageBytes)
	case n < minMessageBytes:
		return View{}, fmt.Errorf("%w: message length %d below minimum %d", ErrCorrupt, n, minMessageBytes)
	case uint64(n) > uint64(len(b)):
		return View{}, fmt.Errorf("%w: message needs %d bytes, have %d", ErrTruncated, n, len(b))
	}
	v := View{b: b[:n:n], pos: pos}
	if le.Uint32(b[offReserved:]) != 0 {
		return View{}, fmt.Errorf("%w: non-zero reserved field", ErrCorrupt)
	}
	if err := v.parseFields(); err != nil {
		return View{}, err
	}
	return v, nil
}

// parseFields walks the variable fields of v.b, recording where each starts.
func (v *View) parseFields() error {
	c := cursor{b: v.b, off: fixedBytes}
	c.skip(c.u16()) // born host
	v.topic = c.off
	c.skip(c.u16())
	v.tags = c.off
	c.skip(c.u16())
	// Counts read as 0 once the cursor is bad, so no check below misfires
	// after an overrun. The limit checks also bound the loops.
	v.keys = c.off
	nk := c.u16()
	if nk > MaxKeys {
		return tooMany("keys", nk, MaxKeys)
	}
	for range nk {
		c.skip(c.u16())
	}
	v.props = c.off
	np := c.u16()
	if np > MaxProperties {
		return tooMany("properties", np, MaxProperties)
	}
	for range np {
		c.skip(c.u16())
		c.skip(c.u32())
	}
	v.dests = c.off
	nd := c.u16()
	if nd == 0 && !c.bad {
		return fmt.Errorf("%w: no destinations", ErrCorrupt)
	}
	if nd > MaxDestinations {
		return tooMany("destinations", nd, MaxDestinations)
	}
	for range nd {
		c.skip(c.u16())
		c.skip(destTailBytes)
	}
	v.body = c.off
	c.skip(c.u32())
	if c.bad {
		return fmt.Errorf("%w: fields overrun the message length %d", ErrCorrupt, len(v.b))
	}
	if c.off != len(v.b) {
		return fmt.Errorf("%w: fields end at %d, message length is %d", ErrCorrupt, c.off, len(v.b))
	}
	return nil
}

// cursor reads a message's fields in order. The first read past the end sets
// bad; later reads then return 0 and skips do nothing, so a parser can check
// bad once per group of fields instead of after every read.
type cursor struct {
	b   []byte
	off int
	bad bool
}

func (c *cursor) u16() int {
	if c.bad || len(c.b)-c.off < 2 {
		c.bad = true
		return 0
	}
	n := le.Uint16(c.b[c.off:])
	c.off += 2
	return int(n)
}

func (c *cursor) u32() int {
	if c.bad || len(c.b)-c.off < 4 {
		c.bad = true
		return 0
	}
	n := le.Uint32(c.b[c.off:])
	c.off += 4
	// The message is at most MaxMessageBytes, so a larger n would overrun it
	// anyway; clamping keeps int(n) from overflowing on 32-bit platforms.
	return int(min(n, MaxMessageBytes+1))
}

func (c *cursor) skip(n int) {
	if c.bad || len(c.b)-c.off < n {
		c.bad = true
		return
	}
	c.off += n
}
