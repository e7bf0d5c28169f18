package frame

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// maxShortstr is the longest shortstr the wire can carry (one length octet).
const maxShortstr = 255

// reader decodes AMQP primitives from a byte slice. Its error is sticky:
// after the first failure every further read returns a zero value and the
// error stays, so generated decoders read all fields and check once.
// Nothing a reader returns aliases its input: strings, byte arrays and
// tables are copies.
type reader struct {
	buf []byte
	err error
}

func syntaxErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSyntax}, args...)...)
}

func (r *reader) setErr(err error) {
	if r.err == nil {
		r.err = err
	}
	r.buf = nil
}

// take returns the next n bytes (aliasing buf) or nil with r.err set.
func (r *reader) take(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.buf)) {
		r.setErr(syntaxErr("%s: need %d bytes, have %d", what, n, len(r.buf)))
		return nil
	}
	b := r.buf[:n:n]
	r.buf = r.buf[n:]
	return b
}

func (r *reader) octet() uint8 {
	b := r.take(1, "octet")
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) short() uint16 {
	b := r.take(2, "short")
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (r *reader) long() uint32 {
	b := r.take(4, "long")
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) longlong() uint64 {
	b := r.take(8, "longlong")
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (r *reader) shortstr() string {
	n := r.octet()
	return string(r.take(uint64(n), "shortstr"))
}

func (r *reader) longstr() string {
	n := r.long()
	return string(r.take(uint64(n), "longstr"))
}

// timestamp reads a u64 count of seconds since the Unix epoch, as UTC. The
// value is interpreted as signed (two's complement), as amqp091-go does.
func (r *reader) timestamp() time.Time {
	v := r.longlong()
	if r.err != nil {
		return time.Time{}
	}
	return time.Unix(int64(v), 0).UTC()
}

// table reads a field table of a method argument (nesting level 1).
func (r *reader) table() Table {
	return r.tableAt(1)
}

// skipShortstr and skipLongstr consume a reserved field.
func (r *reader) skipShortstr() { r.take(uint64(r.octet()), "shortstr") }
func (r *reader) skipLongstr()  { r.take(uint64(r.long()), "longstr") }

// Appenders. Each appends one primitive in network byte order.

func appendOctet(dst []byte, v uint8) []byte     { return append(dst, v) }
func appendShort(dst []byte, v uint16) []byte    { return binary.BigEndian.AppendUint16(dst, v) }
func appendLong(dst []byte, v uint32) []byte     { return binary.BigEndian.AppendUint32(dst, v) }
func appendLonglong(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

// appendShortstr writes s as a shortstr. Callers keep shortstrs at most 255
// bytes (ValidateMethod and AppendProperties check); as a last resort a
// longer s is cut to its first 255 bytes so the frame stays well formed.
func appendShortstr(dst []byte, s string) []byte {
	if len(s) > maxShortstr {
		s = s[:maxShortstr]
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

// appendLongstr writes s as a longstr. A string longer than 4 GiB - 1 cannot
// be represented; it is cut (last resort, as for shortstrs).
func appendLongstr(dst []byte, s string) []byte {
	if uint64(len(s)) > math.MaxUint32 {
		s = s[:math.MaxUint32]
	}
	dst = appendLong(dst, uint32(len(s)))
	return append(dst, s...)
}

func appendTimestamp(dst []byte, t time.Time) []byte {
	return appendLonglong(dst, uint64(t.Unix()))
}

// appendTableArg writes a method's table argument. It never fails: values
// AppendTable rejects are handled as documented at ValidateMethod.
func appendTableArg(dst []byte, t Table) []byte {
	out, _ := appendTable(dst, t, 1, true)
	return out
}

func checkShortstr(field, s string) error {
	if len(s) > maxShortstr {
		return fmt.Errorf("frame: %s is %d bytes, a shortstr holds at most 255", field, len(s))
	}
	return nil
}

func checkLongstr(field, s string) error {
	if uint64(len(s)) > math.MaxUint32 {
		return fmt.Errorf("frame: %s is %d bytes, a longstr holds at most 4 GiB - 1", field, len(s))
	}
	return nil
}

func checkTable(field string, t Table) error {
	if _, err := appendTable(nil, t, 1, false); err != nil {
		return fmt.Errorf("frame: %s: %w", field, err)
	}
	return nil
}
