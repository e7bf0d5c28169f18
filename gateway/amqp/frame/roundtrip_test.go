package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// filled returns a new method of m's type with a non-zero value in every
// field.
func filled(m Method) Method {
	v := reflect.New(reflect.TypeOf(m).Elem())
	s := v.Elem()
	for i := 0; i < s.NumField(); i++ {
		f := s.Field(i)
		name := s.Type().Field(i).Name
		switch f.Interface().(type) {
		case uint8:
			f.SetUint(0xA0 + uint64(i))
		case uint16:
			f.SetUint(0xB100 + uint64(i))
		case uint32:
			f.SetUint(0xC2000000 + uint64(i))
		case uint64:
			f.SetUint(0xD300000000000000 + uint64(i))
		case bool:
			f.SetBool(true)
		case string:
			f.SetString("value of " + name)
		case Table:
			f.Set(reflect.ValueOf(Table{"k-" + name: int32(i), "nested": Table{"a": []any{"x", int64(-1)}}}))
		case time.Time:
			f.Set(reflect.ValueOf(time.Unix(1700000000+int64(i), 0).UTC()))
		default:
			panic("unhandled field type " + f.Type().String())
		}
	}
	return v.Interface().(Method)
}

func TestAllMethodsListed(t *testing.T) {
	all := allMethods()
	if len(all) != 64 {
		t.Fatalf("%d methods, want 64", len(all))
	}
	seen := map[[2]uint16]bool{}
	names := map[string]bool{}
	for _, m := range all {
		id := [2]uint16{m.ClassID(), m.MethodID()}
		if seen[id] || names[m.Name()] {
			t.Fatalf("duplicate %v %s", id, m.Name())
		}
		seen[id], names[m.Name()] = true, true
		if got := newMethod(id[0], id[1]); reflect.TypeOf(got) != reflect.TypeOf(m) {
			t.Fatalf("newMethod(%v) = %T, want %T", id, got, m)
		}
	}
	content := map[string]bool{"basic.publish": true, "basic.return": true, "basic.deliver": true, "basic.get-ok": true}
	for _, m := range all {
		if m.HasContent() != content[m.Name()] {
			t.Errorf("%s HasContent = %v", m.Name(), m.HasContent())
		}
	}
	for name, want := range map[string]bool{
		"connection.start": true, "basic.publish": false, "basic.ack": false, "basic.recover": true,
		"channel.flow-ok": false, "basic.get-ok": true, "confirm.select": true, "connection.blocked": false,
	} {
		for _, m := range all {
			if m.Name() == name && m.Synchronous() != want {
				t.Errorf("%s Synchronous = %v, want %v", name, m.Synchronous(), want)
			}
		}
	}
}

func TestRoundTripAllMethods(t *testing.T) {
	for _, zero := range allMethods() {
		for _, m := range []Method{zero, filled(zero)} {
			if err := ValidateMethod(m); err != nil {
				t.Fatalf("%s: ValidateMethod: %v", m.Name(), err)
			}
			raw := AppendMethodFrame(nil, 7, m)
			f, err := ReadFrame(bytes.NewReader(raw), 1<<20)
			if err != nil || f.Channel != 7 || f.Type != TypeMethod {
				t.Fatalf("%s: ReadFrame = %+v, %v", m.Name(), f, err)
			}
			got, err := DecodeMethod(f.Payload)
			if err != nil {
				t.Fatalf("%s: DecodeMethod: %v", m.Name(), err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("%s: round trip\n got %#v\nwant %#v", m.Name(), got, m)
			}
			// Trailing bytes are ignored.
			if got2, err := DecodeMethod(append(bytes.Clone(f.Payload), 0xCE, 0)); err != nil || !reflect.DeepEqual(got2, got) {
				t.Fatalf("%s: with trailing bytes: %v", m.Name(), err)
			}
		}
	}
}

// TestBitsIndependent: each bit argument alone survives a round trip, so no
// two bits share a position.
func TestBitsIndependent(t *testing.T) {
	for _, zero := range allMethods() {
		typ := reflect.TypeOf(zero).Elem()
		for i := 0; i < typ.NumField(); i++ {
			if typ.Field(i).Type.Kind() != reflect.Bool {
				continue
			}
			v := reflect.New(typ)
			v.Elem().Field(i).SetBool(true)
			m := v.Interface().(Method)
			got, err := DecodeMethod(AppendMethod(nil, m))
			if err != nil || !reflect.DeepEqual(got, m) {
				t.Fatalf("%s.%s alone: got %#v, %v", m.Name(), typ.Field(i).Name, got, err)
			}
		}
	}
}

// TestTruncatedMethods: every proper prefix of every method's payload is
// an ErrSyntax error, never a panic.
func TestTruncatedMethods(t *testing.T) {
	for _, zero := range allMethods() {
		for _, m := range []Method{zero, filled(zero)} {
			payload := AppendMethod(nil, m)
			for n := 0; n < len(payload); n++ {
				got, err := DecodeMethod(payload[:n])
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("%s: prefix %d/%d: %#v, %v; want ErrSyntax", m.Name(), n, len(payload), got, err)
				}
			}
		}
	}
}

func TestUnknownMethod(t *testing.T) {
	for _, p := range [][]byte{h("001e 000a"), h("000a 0063 00"), h("0055 000c"), h("ffff ffff")} {
		if _, err := DecodeMethod(p); !errors.Is(err, ErrUnknownMethod) || errors.Is(err, ErrSyntax) {
			t.Fatalf("% x: %v, want ErrUnknownMethod", p, err)
		}
	}
}

func TestDecodedDoesNotAlias(t *testing.T) {
	payload := AppendMethod(nil, filled(&ConnectionStart{}))
	m, err := DecodeMethod(payload)
	if err != nil {
		t.Fatal(err)
	}
	want := filled(&ConnectionStart{})
	for i := range payload {
		payload[i] = 0xFF
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("decoded value changed with its input: %#v", m)
	}
}

// TestLongShortstr: shortstrs over 255 bytes never panic; ValidateMethod
// reports them and AppendMethod writes a well-formed frame (cut to 255).
func TestLongShortstr(t *testing.T) {
	long := strings.Repeat("q", 300)
	m := &QueueDeclare{Queue: long, Arguments: Table{strings.Repeat("k", 300): "v", "bad": struct{}{}}}
	if err := ValidateMethod(m); err == nil {
		t.Fatal("ValidateMethod accepted a 300-byte queue name")
	}
	got, err := DecodeMethod(AppendMethod(nil, m))
	if err != nil {
		t.Fatal(err)
	}
	want := &QueueDeclare{Queue: long[:255], Arguments: Table{strings.Repeat("k", 255): "v", "bad": nil}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v", got)
	}
	m2 := &QueueDeclare{Arguments: Table{"bad": struct{}{}}}
	if err := ValidateMethod(m2); err == nil {
		t.Fatal("ValidateMethod accepted an unencodable table value")
	}
}

// TestSelfReferentialTable: a table containing itself is an error for
// AppendTable and ValidateMethod, and AppendMethod still terminates.
func TestSelfReferentialTable(t *testing.T) {
	tab := Table{}
	tab["me"] = tab
	if _, err := AppendTable(nil, tab); err == nil {
		t.Fatal("AppendTable accepted a cycle")
	}
	arr := []any{nil}
	arr[0] = arr
	if _, err := AppendTable(nil, Table{"a": arr}); err == nil {
		t.Fatal("AppendTable accepted an array cycle")
	}
	m := &ExchangeDeclare{Arguments: tab}
	if err := ValidateMethod(m); err == nil {
		t.Fatal("ValidateMethod accepted a cycle")
	}
	if _, err := DecodeMethod(AppendMethod(nil, m)); err != nil {
		t.Fatalf("lossy encoding does not decode: %v", err)
	}
}

func TestBadFrameEnd(t *testing.T) {
	raw := bytes.Clone(goldenHeartbeat)
	raw[len(raw)-1] = 0xCD
	if _, err := ReadFrame(bytes.NewReader(raw), 1<<20); !errors.Is(err, ErrFrameEnd) {
		t.Fatalf("%v, want ErrFrameEnd", err)
	}
	raw = bytes.Clone(goldenMethods()[1].raw)
	raw[len(raw)-1] = 0
	if _, err := ReadFrame(bytes.NewReader(raw), 1<<20); !errors.Is(err, ErrFrameEnd) {
		t.Fatalf("%v, want ErrFrameEnd", err)
	}
}

func TestTruncatedFrames(t *testing.T) {
	raw := goldenMethods()[0].raw
	for n := 0; n < len(raw); n++ {
		_, err := ReadFrame(bytes.NewReader(raw[:n]), 1<<20)
		want := io.ErrUnexpectedEOF
		if n == 0 {
			want = io.EOF
		}
		if err != want {
			t.Fatalf("prefix %d: %v, want %v", n, err, want)
		}
	}
}

// countingReader serves a frame header claiming size bytes, then zeros
// forever, counting what it hands out.
type countingReader struct {
	hdr  []byte
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n := copy(p, c.hdr)
	c.hdr = c.hdr[n:]
	for i := n; i < len(p); i++ {
		p[i] = 0
	}
	c.read += len(p)
	return len(p), nil
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// TestFrameTooLargeBeforeAllocation: a 4 GiB size with a 1 MiB limit fails
// after reading only the header and without allocating the payload.
func TestFrameTooLargeBeforeAllocation(t *testing.T) {
	for _, size := range []uint32{0xFFFFFFFF, 1<<20 + 1} {
		hdr := []byte{TypeBody, 0, 1, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[3:], size)
		cr := &countingReader{hdr: hdr}
		before := totalAlloc()
		_, err := ReadFrame(cr, 1<<20)
		allocated := totalAlloc() - before
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("size %d: %v, want ErrFrameTooLarge", size, err)
		}
		if cr.read != 7 {
			t.Fatalf("size %d: read %d bytes, want only the 7-byte header", size, cr.read)
		}
		if allocated > 64<<10 { // far below the 1 MiB limit (race mode adds overhead)
			t.Fatalf("size %d: allocated %d bytes", size, allocated)
		}
	}
	// Exactly the limit is fine.
	raw := AppendFrame(nil, TypeBody, 1, make([]byte, 100))
	if _, err := ReadFrame(bytes.NewReader(raw), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFrame(bytes.NewReader(raw), 99); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("%v, want ErrFrameTooLarge", err)
	}
}

// TestLyingSize: a frame announcing 16 MiB that carries 10 bytes costs
// about the eager buffer, not 16 MiB.
func TestLyingSize(t *testing.T) {
	hdr := []byte{TypeBody, 0, 1, 0x01, 0, 0, 0}
	raw := append(hdr, make([]byte, 10)...)
	before := totalAlloc()
	_, err := ReadFrame(bytes.NewReader(raw), 1<<30)
	allocated := totalAlloc() - before
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("%v, want io.ErrUnexpectedEOF", err)
	}
	if allocated > 2*eagerAlloc+4096 {
		t.Fatalf("allocated %d bytes", allocated)
	}
}

// TestLargeFrame: frames beyond the eager buffer read correctly.
func TestLargeFrame(t *testing.T) {
	payload := make([]byte, 300000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	raw := AppendFrame(nil, TypeBody, 9, payload)
	f, err := ReadFrame(iotestOneByteAtATimeish(raw), 1<<20)
	if err != nil || !bytes.Equal(f.Payload, payload) || f.Channel != 9 || f.Type != TypeBody {
		t.Fatalf("ReadFrame: %v", err)
	}
}

// iotestOneByteAtATimeish hands out data in odd-sized chunks.
func iotestOneByteAtATimeish(b []byte) io.Reader { return &chunky{b: b} }

type chunky struct {
	b []byte
	n int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	c.n = c.n%9000 + 1
	k := min(len(p), len(c.b), c.n)
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

func TestTableEveryTagRoundTrip(t *testing.T) {
	tab := Table{
		"bool": true, "int8": int8(-5), "uint8": uint8(5), "int16": int16(-300), "uint16": uint16(300),
		"int32": int32(-70000), "uint32": uint32(70000), "int64": int64(-1 << 40), "float32": float32(-0.25),
		"float64": 1e300, "decimal": Decimal{Scale: 3, Value: -123456}, "string": "héllo",
		"bytes": []byte("raw\x00"), "void": nil, "time": time.Unix(-5, 0).UTC(),
		"deep":  []any{Table{"in": []any{int8(1), Table{}, []any{}, nil, "s"}}, []any{uint16(2)}},
		"empty": Table{}, "emptyArr": []any{}, "emptyBytes": []byte{},
	}
	enc, err := AppendTable(nil, tab)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := ReadTable(enc)
	if err != nil || n != len(enc) {
		t.Fatalf("ReadTable: %d, %v", n, err)
	}
	// Empty containers decode as nil.
	want := Table{}
	for k, v := range tab {
		want[k] = v
	}
	want["deep"] = []any{Table{"in": []any{int8(1), Table(nil), []any(nil), nil, "s"}}, []any{uint16(2)}}
	want["empty"], want["emptyArr"], want["emptyBytes"] = Table(nil), []any(nil), []byte(nil)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n %#v\nwant\n %#v", got, want)
	}
	enc2, err := AppendTable(nil, got)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}

func TestTableEncodeConversions(t *testing.T) {
	for _, c := range []struct {
		in   any
		want []byte
	}{
		{int(7), h("49 00000007")},
		{int(-1 << 31), h("49 80000000")},
		{int(1 << 31), h("6c 0000000080000000")},
		{int(-1<<31 - 1), h("6c ffffffff7fffffff")},
		{uint64(1<<63 - 1), h("6c 7fffffffffffffff")},
		{map[string]any{"a": false}, h("46 00000004 0161 7400")},
		{time.Date(2023, 11, 14, 23, 13, 20, 999, time.FixedZone("x", 3600)), h("54 0000000065 53f100")},
	} {
		got, err := AppendTable(nil, Table{"k": c.in})
		want := cat(h("00000000"), h("01"), a("k"), c.want)
		binary.BigEndian.PutUint32(want, uint32(len(want)-4))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%T %v: % x, %v; want % x", c.in, c.in, got, err, want)
		}
	}
	for _, bad := range []any{uint64(1 << 63), uint(1), struct{}{}, []string{"a"}, &Decimal{}, Table{"x": complex(1, 2)}} {
		prefix := []byte("keep")
		got, err := AppendTable(prefix, Table{"k": bad})
		if err == nil || !bytes.Equal(got, prefix) {
			t.Errorf("%T: % x, %v; want an error and dst unchanged", bad, got, err)
		}
	}
	if _, err := AppendTable(nil, Table{strings.Repeat("k", 256): 1}); err == nil {
		t.Error("256-byte key accepted")
	}
}

func TestTableErrors(t *testing.T) {
	for name, b := range map[string][]byte{
		"unknown tag U":       cat(h("00000003 01"), a("k"), h("55")),
		"unknown tag L":       cat(h("0000000b 01"), a("k"), h("4c 0000000000000001")),
		"unknown tag 0":       cat(h("00000003 01"), a("k"), h("00")),
		"length past end":     h("00000005 01"),
		"key past table":      h("00000001 05"),
		"value past table":    cat(h("00000004 01"), a("k"), h("49 00")),
		"string past table":   cat(h("00000008 01"), a("k"), h("53 00000010 00")),
		"array past end":      cat(h("00000008 01"), a("k"), h("41 00000001 00")),
		"bad in array":        cat(h("00000009 01"), a("k"), h("41 00000001 55")),
		"bytes past end":      cat(h("00000007 01"), a("k"), h("78 ffffffff")),
		"nested past end":     cat(h("00000007 01"), a("k"), h("46 00000001")),
		"short length prefix": h("0000"),
		"empty":               nil,
	} {
		if tab, _, err := ReadTable(b); !errors.Is(err, ErrSyntax) {
			t.Errorf("%s: %v, %v; want ErrSyntax", name, tab, err)
		}
	}
}

// nestedTables builds a table of the given nesting depth (1 = no nesting):
// containers at odd levels are tables (F), at even levels arrays (A).
func nestedTables(depth int) []byte {
	inner := h("00000000") // the innermost container, empty
	for level := depth; level > 1; level-- {
		tag := h("41") // 'A'
		if level%2 == 1 {
			tag = h("46") // 'F'
		}
		entry := cat(tag, inner)
		if (level-1)%2 == 1 { // the parent is a table: the entry needs a key
			entry = cat(h("01"), a("k"), entry)
		}
		inner = binary.BigEndian.AppendUint32(nil, uint32(len(entry)))
		inner = append(inner, entry...)
	}
	return inner
}

// nestedTablesVia encodes tab ignoring the depth limit (for tests).
func nestedTablesVia(tab Table) []byte {
	b, err := appendTable(nil, tab, 0, false)
	if err != nil {
		panic(err)
	}
	return b
}

func TestDepthLimit(t *testing.T) {
	if _, _, err := ReadTable(nestedTables(MaxDepth)); err != nil {
		t.Fatalf("depth %d: %v", MaxDepth, err)
	}
	if _, _, err := ReadTable(nestedTables(MaxDepth + 1)); !errors.Is(err, ErrSyntax) {
		t.Fatalf("depth %d: %v, want ErrSyntax", MaxDepth+1, err)
	}
	// A hostile table nested thousands deep fails without recursing that far.
	deep := nestedTables(1 << 12)
	if _, _, err := ReadTable(deep); !errors.Is(err, ErrSyntax) {
		t.Fatalf("deep: %v", err)
	}

	// Encoding: MaxDepth levels are fine, one more is not.
	build := func(depth int) Table {
		tab := Table{}
		for level := depth - 1; level >= 1; level-- {
			if level%2 == 0 {
				tab = Table{"k": tab}
			} else if level > 1 {
				tab = Table{"k": []any{nil, tab}}
				level--
			} else {
				tab = Table{"k": tab}
			}
		}
		return tab
	}
	enc, err := AppendTable(nil, build(MaxDepth))
	if err != nil {
		t.Fatalf("encode depth %d: %v", MaxDepth, err)
	}
	if _, _, err := ReadTable(enc); err != nil {
		t.Fatalf("decode of encoded depth %d: %v", MaxDepth, err)
	}
	if _, _, err := ReadTable(nestedTablesVia(build(MaxDepth + 1))); !errors.Is(err, ErrSyntax) {
		t.Fatalf("decode of lossy-encoded depth %d: %v", MaxDepth+1, err)
	}
	if _, err := AppendTable(nil, build(MaxDepth+1)); err == nil {
		t.Fatalf("encode depth %d accepted", MaxDepth+1)
	}
}

func TestPropertiesRoundTrip(t *testing.T) {
	full := Properties{
		ContentType: "application/json", ContentEncoding: "gzip",
		Headers:      Table{"x-delay": int64(5000), "CC": []any{"a", "b"}},
		DeliveryMode: 2, Priority: 9, CorrelationID: "corr", ReplyTo: "amq.rabbitmq.reply-to",
		Expiration: "60000", MessageID: "mid", Timestamp: time.Unix(1234567890, 0).UTC(),
		Type: "t", UserID: "guest", AppID: "app", ClusterID: "c",
		Flags: 0xFFFC,
	}
	for _, p := range []Properties{
		full,
		{},
		{Flags: FlagHeaders}, // present but empty headers
		{Flags: FlagContentType | FlagTimestamp, ContentType: ""},
		{Flags: FlagClusterID, ClusterID: "only", ContentType: "ignored: bit clear"},
	} {
		enc, err := AppendProperties(nil, &p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeProperties(enc)
		if err != nil {
			t.Fatal(err)
		}
		want := p
		if want.Flags&FlagContentType == 0 {
			want.ContentType = ""
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got\n %#v\nwant\n %#v", got, want)
		}
		// Every proper prefix fails.
		for n := 0; n < len(enc); n++ {
			if _, err := DecodeProperties(enc[:n]); !errors.Is(err, ErrSyntax) {
				t.Fatalf("prefix %d of % x: %v", n, enc, err)
			}
		}
		payload := AppendHeader(nil, 60, 1<<40, enc)
		c, s, props, err := ParseHeader(payload)
		if err != nil || c != 60 || s != 1<<40 || !bytes.Equal(props, enc) {
			t.Fatalf("ParseHeader = %d %d % x %v", c, s, props, err)
		}
		for n := 0; n < len(payload); n++ {
			if _, _, _, err := ParseHeader(payload[:n]); !errors.Is(err, ErrSyntax) {
				t.Fatalf("ParseHeader prefix %d: %v", n, err)
			}
		}
	}
}

func TestPropertiesErrors(t *testing.T) {
	for _, flags := range []uint16{0x0001, 0x0002, 0x8001} {
		b := binary.BigEndian.AppendUint16(nil, flags)
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		if _, err := DecodeProperties(b); !errors.Is(err, ErrSyntax) {
			t.Errorf("flags %04x: %v, want ErrSyntax", flags, err)
		}
		if _, _, _, err := ParseHeader(append(h("003c 0000 0000000000000000"), b...)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseHeader flags %04x: %v, want ErrSyntax", flags, err)
		}
		if _, err := AppendProperties(nil, &Properties{Flags: flags}); err == nil {
			t.Errorf("AppendProperties flags %04x accepted", flags)
		}
	}
	dst := []byte("keep")
	for _, p := range []Properties{
		{Flags: FlagMessageID, MessageID: strings.Repeat("m", 256)},
		{Flags: FlagAppID | FlagHeaders, Headers: Table{"x": struct{}{}}},
		{Flags: FlagClusterID, ClusterID: strings.Repeat("m", 256)},
	} {
		got, err := AppendProperties(dst, &p)
		if err == nil || !bytes.Equal(got, dst) {
			t.Errorf("%+v: % x, %v; want an error and dst unchanged", p.Flags, got, err)
		}
	}
	if _, err := DecodeProperties(cat(h("2000 00000003 01"), a("k"), h("55"))); !errors.Is(err, ErrSyntax) {
		t.Errorf("bad header table: %v", err)
	}
}

func BenchmarkAppendDeliver(b *testing.B) {
	m := &BasicDeliver{ConsumerTag: "amq.ctag-123", DeliveryTag: 42, Exchange: "amq.direct", RoutingKey: "rk"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMethodFrame(buf[:0], 1, m)
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	payload := AppendMethod(nil, &BasicPublish{Exchange: "amq.direct", RoutingKey: "rk"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMethod(payload); err != nil {
			b.Fatal(err)
		}
	}
}
