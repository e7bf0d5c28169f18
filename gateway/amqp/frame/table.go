package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Table is an AMQP field table: shortstr keys to tagged values. The Go type
// of each value follows the RabbitMQ tag set (see the package doc):
//
//	t bool     b int8     B uint8    s int16    u uint16   I int32
//	i uint32   l int64    f float32  d float64  D Decimal  S string
//	x []byte   A []any    T time.Time (whole seconds, UTC)
//	F Table    V nil
//
// Decoding yields exactly these types. A zero-length table or array decodes
// as nil (Table(nil), []any(nil)), an empty byte array as []byte(nil).
// Encoding also accepts int (I if it fits in int32, else l), uint64 (l if it
// fits in int64) and map[string]any (F).
type Table map[string]any

// Decimal is the 'D' field value: Value / 10^Scale. Value is signed.
type Decimal struct {
	Scale uint8
	Value int32
}

// MaxDepth is how deeply tables and arrays may nest: a method's or
// message's table is level 1, a table or array inside it level 2, and so on.
// Deeper input is ErrSyntax; deeper values cannot be encoded.
const MaxDepth = 64

var (
	errDepth       = errors.New("frame: tables and arrays nested deeper than MaxDepth")
	errTableTooBig = errors.New("frame: table or array longer than 4 GiB - 1")
)

// AppendTable appends t as a field table (u32 byte length, then entries)
// and returns the extended slice. Keys are written in sorted order, so the
// output is deterministic. A key longer than 255 bytes, a value of a type
// not listed at Table, or nesting deeper than MaxDepth (including a table
// that contains itself) is an error; dst is then returned unchanged.
func AppendTable(dst []byte, t Table) ([]byte, error) {
	return appendTable(dst, t, 1, false)
}

// ReadTable decodes one field table (u32 byte length, then entries) from
// the start of b and returns it with the number of bytes consumed. Bytes
// after the table are not looked at. Malformed or truncated input, an
// unknown tag or nesting deeper than MaxDepth is an error wrapping ErrSyntax.
func ReadTable(b []byte) (Table, int, error) {
	r := reader{buf: b}
	t := r.table()
	if r.err != nil {
		return nil, 0, r.err
	}
	return t, len(b) - len(r.buf), nil
}

// tableAt reads a field table at nesting level depth.
func (r *reader) tableAt(depth int) Table {
	n := r.long()
	body := r.take(uint64(n), "table")
	if r.err != nil {
		return nil
	}
	if depth > MaxDepth {
		r.setErr(fmt.Errorf("%w: %w", ErrSyntax, errDepth))
		return nil
	}
	if len(body) == 0 {
		return nil
	}
	sub := reader{buf: body}
	t := make(Table)
	for len(sub.buf) > 0 {
		k := sub.shortstr()
		v := sub.value(depth)
		if sub.err != nil {
			r.setErr(sub.err)
			return nil
		}
		t[k] = v
	}
	return t
}

// arrayAt reads a field array ('A': u32 byte length, then tagged values) at
// nesting level depth.
func (r *reader) arrayAt(depth int) []any {
	n := r.long()
	body := r.take(uint64(n), "array")
	if r.err != nil {
		return nil
	}
	if depth > MaxDepth {
		r.setErr(fmt.Errorf("%w: %w", ErrSyntax, errDepth))
		return nil
	}
	var a []any
	sub := reader{buf: body}
	for len(sub.buf) > 0 {
		v := sub.value(depth)
		if sub.err != nil {
			r.setErr(sub.err)
			return nil
		}
		a = append(a, v)
	}
	return a
}

// value reads one tagged value inside a container at level depth.
func (r *reader) value(depth int) any {
	tag := r.octet()
	if r.err != nil {
		return nil
	}
	var v any
	switch tag {
	case 't':
		v = r.octet() != 0
	case 'b':
		v = int8(r.octet())
	case 'B':
		v = r.octet()
	case 's':
		v = int16(r.short())
	case 'u':
		v = r.short()
	case 'I':
		v = int32(r.long())
	case 'i':
		v = r.long()
	case 'l':
		v = int64(r.longlong())
	case 'f':
		v = math.Float32frombits(r.long())
	case 'd':
		v = math.Float64frombits(r.longlong())
	case 'D':
		scale := r.octet()
		v = Decimal{Scale: scale, Value: int32(r.long())}
	case 'S':
		v = r.longstr()
	case 'x':
		b := r.take(uint64(r.long()), "byte array")
		var c []byte
		if len(b) > 0 {
			c = append(c, b...)
		}
		v = c
	case 'A':
		v = r.arrayAt(depth + 1)
	case 'T':
		v = r.timestamp()
	case 'F':
		v = r.tableAt(depth + 1)
	case 'V':
		v = nil
	default:
		r.setErr(syntaxErr("unknown field value tag %q (0x%02x)", tag, tag))
		return nil
	}
	if r.err != nil {
		return nil
	}
	return v
}

// appendTable appends t at nesting level depth. With lossy set it never
// fails: an over-long key is cut to 255 bytes, and a value that cannot be
// encoded (unknown type, too deep) is written as void ('V').
func appendTable(dst []byte, t Table, depth int, lossy bool) ([]byte, error) {
	start := len(dst)
	if depth > MaxDepth {
		return dst, errDepth
	}
	dst = append(dst, 0, 0, 0, 0) // length, patched below
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var err error
	for _, k := range keys {
		if len(k) > maxShortstr && !lossy {
			return dst[:start], fmt.Errorf("frame: table key %.20q... is %d bytes, at most 255 allowed", k, len(k))
		}
		dst = appendShortstr(dst, k)
		if dst, err = appendValue(dst, t[k], depth, lossy); err != nil {
			return dst[:start], fmt.Errorf("frame: table key %q: %w", k, err)
		}
	}
	return patchLength(dst, start, lossy)
}

// patchLength writes the byte count after dst[start:start+4] into those four
// bytes. Lossy callers get an empty container instead of a length overflow.
func patchLength(dst []byte, start int, lossy bool) ([]byte, error) {
	n := uint64(len(dst) - start - 4)
	if n > math.MaxUint32 {
		if !lossy {
			return dst[:start], errTableTooBig
		}
		return append(dst[:start], 0, 0, 0, 0), nil
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return dst, nil
}

// appendValue appends one tagged value inside a container at level depth.
func appendValue(dst []byte, v any, depth int, lossy bool) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, 'V'), nil
	case bool:
		var b byte
		if v {
			b = 1
		}
		return append(dst, 't', b), nil
	case int8:
		return append(dst, 'b', byte(v)), nil
	case uint8:
		return append(dst, 'B', v), nil
	case int16:
		return appendShort(append(dst, 's'), uint16(v)), nil
	case uint16:
		return appendShort(append(dst, 'u'), v), nil
	case int32:
		return appendLong(append(dst, 'I'), uint32(v)), nil
	case uint32:
		return appendLong(append(dst, 'i'), v), nil
	case int64:
		return appendLonglong(append(dst, 'l'), uint64(v)), nil
	case int:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return appendLong(append(dst, 'I'), uint32(int32(v))), nil
		}
		return appendLonglong(append(dst, 'l'), uint64(int64(v))), nil
	case uint64:
		if v <= math.MaxInt64 {
			return appendLonglong(append(dst, 'l'), v), nil
		}
	case float32:
		return appendLong(append(dst, 'f'), math.Float32bits(v)), nil
	case float64:
		return appendLonglong(append(dst, 'd'), math.Float64bits(v)), nil
	case Decimal:
		return appendLong(append(dst, 'D', v.Scale), uint32(v.Value)), nil
	case string:
		if uint64(len(v)) <= math.MaxUint32 {
			return appendLongstr(append(dst, 'S'), v), nil
		}
	case []byte:
		if uint64(len(v)) <= math.MaxUint32 {
			dst = appendLong(append(dst, 'x'), uint32(len(v)))
			return append(dst, v...), nil
		}
	case time.Time:
		return appendTimestamp(append(dst, 'T'), v), nil
	case Table:
		return appendNested(dst, v, depth, lossy)
	case map[string]any:
		return appendNested(dst, Table(v), depth, lossy)
	case []any:
		if depth+1 <= MaxDepth {
			start := len(dst)
			dst = append(dst, 'A', 0, 0, 0, 0)
			var err error
			for i, e := range v {
				if dst, err = appendValue(dst, e, depth+1, lossy); err != nil {
					return dst[:start], fmt.Errorf("array element %d: %w", i, err)
				}
			}
			out, err := patchLength(dst, start+1, lossy)
			if err != nil {
				return dst[:start], err
			}
			return out, nil
		}
		if !lossy {
			return dst, errDepth
		}
	}
	if lossy {
		return append(dst, 'V'), nil
	}
	switch v.(type) {
	case uint64:
		return dst, fmt.Errorf("uint64 value %v does not fit in a signed 64-bit field", v)
	case string, []byte:
		return dst, errTableTooBig
	}
	return dst, fmt.Errorf("value of type %T cannot be encoded in a field table", v)
}

func appendNested(dst []byte, t Table, depth int, lossy bool) ([]byte, error) {
	if depth+1 > MaxDepth {
		if lossy {
			return append(dst, 'V'), nil
		}
		return dst, errDepth
	}
	out, err := appendTable(append(dst, 'F'), t, depth+1, lossy)
	if err != nil {
		return dst, err
	}
	return out, nil
}
