package frame

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// The fuzz properties: no input panics; errors are the package's sentinels;
// whatever decodes re-encodes, and the re-encoding decodes to an equal value.
// Values are compared through their encodings where floats are involved
// (NaN != NaN for reflect.DeepEqual), and directly otherwise.

func FuzzDecodeMethod(f *testing.F) {
	for _, g := range goldenMethods() {
		f.Add(g.raw[7 : len(g.raw)-1])
	}
	for _, m := range allMethods() {
		f.Add(AppendMethod(nil, filled(m)))
	}
	f.Add(h("000a"))
	f.Add(h("0032 000a 0000 00 00 00000005 01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMethod(b)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrUnknownMethod) {
				t.Fatalf("error is no sentinel: %v", err)
			}
			return
		}
		enc := AppendMethod(nil, m)
		m2, err := DecodeMethod(enc)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", m.Name(), err)
		}
		if enc2 := AppendMethod(nil, m2); !bytes.Equal(enc, enc2) {
			t.Fatalf("%s: encodings differ\n% x\n% x", m.Name(), enc, enc2)
		}
		if !hasFloat(m) && !reflect.DeepEqual(m, m2) {
			t.Fatalf("%s: %#v != %#v", m.Name(), m, m2)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	for _, g := range goldenMethods() {
		f.Add(g.raw)
	}
	f.Add(goldenHeader)
	f.Add(goldenHeartbeat)
	f.Add(h("03 0001 ffffffff"))
	f.Add(h("03 0001 00000002 aabb cd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		before := totalAlloc()
		fr, err := ReadFrame(bytes.NewReader(b), 1<<20)
		if allocated := totalAlloc() - before; allocated > 2*eagerAlloc+64*uint64(len(b))+4096 {
			t.Fatalf("allocated %d bytes for %d input bytes", allocated, len(b))
		}
		if err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrFrameEnd) && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("error is no sentinel: %v", err)
			}
			return
		}
		enc := AppendFrame(nil, fr.Type, fr.Channel, fr.Payload)
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoding differs:\n% x\n% x", enc, b[:len(enc)])
		}
		fr2, err := ReadFrame(bytes.NewReader(enc), 1<<20)
		if err != nil || fr2.Type != fr.Type || fr2.Channel != fr.Channel || !bytes.Equal(fr2.Payload, fr.Payload) {
			t.Fatalf("re-read: %+v, %v", fr2, err)
		}
		// Whatever the payload, its decoders must not panic either.
		switch fr.Type {
		case TypeMethod:
			DecodeMethod(fr.Payload)
		case TypeHeader:
			ParseHeader(fr.Payload)
		}
	})
}

func FuzzReadTable(f *testing.F) {
	f.Add(goldenTable)
	f.Add(nestedTables(MaxDepth))
	f.Add(nestedTables(MaxDepth + 1))
	f.Add(goldenMethods()[0].raw[13:])
	f.Add(h("00000003 01 6b 55"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, n, err := ReadTable(b)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error is no sentinel: %v", err)
			}
			return
		}
		if n < 4 || n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		enc, err := AppendTable(nil, tab)
		if err != nil {
			t.Fatalf("decoded table does not encode: %v", err)
		}
		tab2, n2, err := ReadTable(enc)
		if err != nil || n2 != len(enc) {
			t.Fatalf("re-encoded table does not decode: %v", err)
		}
		enc2, err := AppendTable(nil, tab2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encodings differ: %v\n% x\n% x", err, enc, enc2)
		}
		if !floatIn(tab) && !reflect.DeepEqual(tab, tab2) {
			t.Fatalf("%#v != %#v", tab, tab2)
		}
	})
}

func FuzzDecodeProperties(f *testing.F) {
	f.Add(goldenHeader[7+12 : len(goldenHeader)-1])
	full := Properties{Flags: 0xFFFC, Headers: Table{"a": []any{int8(1)}}, ContentType: "c"}
	enc, _ := AppendProperties(nil, &full)
	f.Add(enc)
	f.Add(h("0000"))
	f.Add(h("0001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeProperties(b)
		_, _, props, herr := ParseHeader(append(h("003c 0000 0000000000000001"), b...))
		if (err == nil) != (herr == nil) {
			t.Fatalf("DecodeProperties: %v; ParseHeader: %v", err, herr)
		}
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error is no sentinel: %v", err)
			}
			return
		}
		enc, err := AppendProperties(nil, &p)
		if err != nil {
			t.Fatalf("decoded properties do not encode: %v", err)
		}
		// The raw bytes need not be canonical (key order, 't' values
		// other than 1, duplicate keys), but the length must match.
		if len(props) > len(b) {
			t.Fatalf("ParseHeader props of %d bytes from %d", len(props), len(b))
		}
		p2, err := DecodeProperties(enc)
		if err != nil {
			t.Fatalf("re-encoded properties do not decode: %v", err)
		}
		if !floatIn(p.Headers) && !reflect.DeepEqual(p, p2) {
			t.Fatalf("%#v != %#v", p, p2)
		}
	})
}

// hasFloat reports whether any table argument of m holds a float.
func hasFloat(m Method) bool {
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		if t, ok := v.Field(i).Interface().(Table); ok && floatIn(t) {
			return true
		}
	}
	return false
}

func floatIn(v any) bool {
	switch v := v.(type) {
	case float32, float64:
		return true
	case Table:
		for _, e := range v {
			if floatIn(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if floatIn(e) {
				return true
			}
		}
	}
	return false
}
