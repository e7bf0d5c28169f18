package batch

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func encode(t testing.TB, h Header, msgs []Message) []byte {
	t.Helper()
	var e Encoder
	e.Reset(h.BatchID, h.StoreUnixMs)
	for i := range msgs {
		if err := e.Add(&msgs[i]); err != nil {
			t.Fatalf("Add message %d: %v", i, err)
		}
	}
	return e.Bytes()
}

// decodeAll iterates b and decodes every message, checking each View's
// accessors and DecodeMessage against Decode on the way.
func decodeAll(t testing.TB, b []byte) (Header, []Message, error) {
	t.Helper()
	var it Iterator
	if err := it.Init(b); err != nil {
		return Header{}, nil, err
	}
	var msgs []Message
	for it.Next() {
		v := it.View()
		m, err := v.Decode()
		if err != nil {
			return it.Header(), msgs, err
		}
		checkView(t, b, v, &m)
		msgs = append(msgs, m)
	}
	return it.Header(), msgs, it.Err()
}

// checkView checks every accessor of v, a message of batch b, against m.
func checkView(t testing.TB, b []byte, v View, m *Message) {
	t.Helper()
	if v.Pos()%AlignBytes != 0 || v.Pos() < HeaderBytes {
		t.Errorf("message at unaligned position %d", v.Pos())
	}
	if v.Len() != int(messageLen(m)) || alignUp(v.Len()) != EncodedSize(m) {
		t.Errorf("Len %d, EncodedSize %d; want %d", v.Len(), EncodedSize(m), messageLen(m))
	}
	if got := fromView(v); !reflect.DeepEqual(got, *m) {
		t.Errorf("accessors give %+v\nDecode gives %+v", got, *m)
	}
	if v.NumKeys() != len(m.Keys) || v.NumProperties() != len(m.Properties) || v.NumDestinations() != len(m.Destinations) {
		t.Errorf("counts %d keys, %d properties, %d destinations; want %d, %d, %d",
			v.NumKeys(), v.NumProperties(), v.NumDestinations(), len(m.Keys), len(m.Properties), len(m.Destinations))
	}
	for i := range v.NumDestinations() {
		d := v.Destination(i)
		if got := (Destination{string(d.Topic), d.QueueID, d.QueueOffset, d.TagHash}); got != m.Destinations[i] {
			t.Errorf("Destination(%d) = %+v, want %+v", i, got, m.Destinations[i])
		}
	}
	if !v.VerifyBody() {
		t.Errorf("VerifyBody false on a decodable message")
	}
	dm, dv, err := DecodeMessage(b[v.Pos() : v.Pos()+v.Len()])
	if err != nil || !reflect.DeepEqual(dm, *m) || dv.Pos() != 0 || dv.Len() != v.Len() {
		t.Errorf("DecodeMessage at %d: %v, %+v", v.Pos(), err, dm)
	}
}

// fromView rebuilds a Message through the zero-copy accessors only.
func fromView(v View) Message {
	m := Message{
		ID:             v.ID(),
		Flag:           v.Flag(),
		SysFlag:        v.SysFlag(),
		BornUnixMs:     v.BornUnixMs(),
		ReconsumeTimes: v.ReconsumeTimes(),
		BornHost:       string(v.BornHost()),
		Topic:          string(v.Topic()),
		Tags:           string(v.Tags()),
	}
	for k := range v.Keys {
		m.Keys = append(m.Keys, string(k))
	}
	for k, val := range v.Properties {
		m.Properties = append(m.Properties, Property{Key: string(k), Value: string(val)})
	}
	for _, d := range v.Destinations {
		m.Destinations = append(m.Destinations, Destination{string(d.Topic), d.QueueID, d.QueueOffset, d.TagHash})
	}
	if len(v.Body()) > 0 {
		m.Body = slices.Clone(v.Body())
	}
	return m
}

// walk iterates b without decoding and returns the error that ends it.
func walk(b []byte) error {
	var it Iterator
	if err := it.Init(b); err != nil {
		return err
	}
	for it.Next() {
	}
	return it.Err()
}

func TestFixtures(t *testing.T) {
	for _, fx := range Fixtures() {
		t.Run(fx.Name, func(t *testing.T) {
			got := encode(t, fx.Header, fx.Messages)
			if i := firstDiff(got, fx.Raw); i >= 0 {
				t.Fatalf("encoding differs from Raw at byte %d (got %d bytes, want %d)", i, len(got), len(fx.Raw))
			}
			h, msgs, err := decodeAll(t, fx.Raw)
			if err != nil {
				t.Fatal(err)
			}
			if h != fx.Header {
				t.Errorf("header %+v, want %+v", h, fx.Header)
			}
			if !reflect.DeepEqual(msgs, fx.Messages) {
				t.Errorf("decoded %+v\nwant %+v", msgs, fx.Messages)
			}
			for _, m := range fx.Messages {
				for _, d := range m.Destinations {
					if d.TagHash != 0 && d.TagHash != JavaStringHash(m.Tags) {
						t.Errorf("fixture tag hash %d is not JavaStringHash(%q)", d.TagHash, m.Tags)
					}
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func randString(r *rand.Rand, maxLen int) string {
	if r.IntN(4) == 0 {
		return ""
	}
	b := make([]byte, r.IntN(maxLen+1))
	for i := range b {
		b[i] = byte(r.UintN(256)) // arbitrary bytes: the codec does not require UTF-8
	}
	return string(b)
}

func randMessage(r *rand.Rand) Message {
	m := Message{
		Flag:           r.Uint32(),
		SysFlag:        r.Uint32(),
		BornUnixMs:     int64(r.Uint64()),
		ReconsumeTimes: r.Uint32(),
		BornHost:       randString(r, 24),
		Topic:          randString(r, 40),
		Tags:           randString(r, 10),
	}
	for i := range m.ID {
		m.ID[i] = byte(r.UintN(256))
	}
	for range r.IntN(4) {
		m.Keys = append(m.Keys, randString(r, 12))
	}
	for range r.IntN(5) {
		m.Properties = append(m.Properties, Property{Key: randString(r, 12), Value: randString(r, 300)})
	}
	for range 1 + r.IntN(4) {
		m.Destinations = append(m.Destinations, Destination{
			Topic: randString(r, 40), QueueID: r.Uint32(), QueueOffset: r.Uint64(), TagHash: int64(r.Uint64()),
		})
	}
	if body := randString(r, 3000); body != "" {
		m.Body = []byte(body)
	}
	return m
}

// randBatch returns a batch of n random messages, nil if n is 0 as decoding
// gives.
func randBatch(r *rand.Rand, n int) (Header, []Message) {
	var msgs []Message
	for range n {
		msgs = append(msgs, randMessage(r))
	}
	h := Header{Kind: KindMessages, Count: uint32(len(msgs)), BatchID: r.Uint64(), StoreUnixMs: int64(r.Uint64())}
	return h, msgs
}

func logSeedOnFailure(t *testing.T, seed uint64) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed %d", seed)
		}
	})
}

func TestRoundTripRandom(t *testing.T) {
	const seed = 0xc0ffee
	logSeedOnFailure(t, seed)
	r := rand.New(rand.NewPCG(seed, seed))
	var e Encoder // reused across batches, as the proposer does
	for range 300 {
		h, msgs := randBatch(r, r.IntN(20))
		e.Reset(h.BatchID, h.StoreUnixMs)
		size := HeaderBytes
		for i := range msgs {
			if err := e.Add(&msgs[i]); err != nil {
				t.Fatal(err)
			}
			size += EncodedSize(&msgs[i])
		}
		b := e.Bytes()
		if e.Len() != len(b) || e.Len() != size || e.Count() != len(msgs) {
			t.Fatalf("Len %d, Count %d, len(Bytes) %d; want size %d, count %d", e.Len(), e.Count(), len(b), size, len(msgs))
		}
		gotH, got, err := decodeAll(t, b)
		if err != nil {
			t.Fatal(err)
		}
		if gotH != h || !reflect.DeepEqual(got, msgs) {
			t.Fatalf("round trip changed the batch:\n got %+v %+v\nwant %+v %+v", gotH, got, h, msgs)
		}
	}
}

func TestZeroEncoderIsEmptyBatch(t *testing.T) {
	var e Encoder
	if e.Len() != HeaderBytes || e.Count() != 0 {
		t.Fatalf("Len %d, Count %d", e.Len(), e.Count())
	}
	h, msgs, err := decodeAll(t, e.Bytes())
	if err != nil || len(msgs) != 0 || h != (Header{Kind: KindMessages}) {
		t.Fatalf("decoded %+v %v: %v", h, msgs, err)
	}
}

func TestTruncatedEverywhere(t *testing.T) {
	const seed = 7
	logSeedOnFailure(t, seed)
	r := rand.New(rand.NewPCG(seed, seed))
	h, msgs := randBatch(r, 5)
	raws := [][]byte{encode(t, h, msgs)}
	for _, fx := range Fixtures() {
		raws = append(raws, fx.Raw)
	}
	for _, raw := range raws {
		for n := range len(raw) {
			if err := walk(raw[:n]); !errors.Is(err, ErrTruncated) {
				t.Fatalf("batch of %d bytes cut to %d: got %v, want ErrTruncated", len(raw), n, err)
			}
		}
	}
}

func TestHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		off  int
		val  byte
		want error
	}{
		{"magic", 0, 'X', ErrBadMagic},
		{"version 0", 2, 0, ErrBadVersion},
		{"version 2", 2, 2, ErrBadVersion},
		{"kind 0", 3, 0, ErrUnknownKind},
		{"kind 2", 3, 2, ErrUnknownKind},
		{"kind 255", 3, 255, ErrUnknownKind},
	}
	for _, tt := range tests {
		b := Fixtures()[0].Raw
		b[tt.off] = tt.val
		if _, err := ParseHeader(b); !errors.Is(err, tt.want) {
			t.Errorf("%s: ParseHeader: %v, want %v", tt.name, err, tt.want)
		}
		if err := walk(b); !errors.Is(err, tt.want) {
			t.Errorf("%s: Init: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// viewOf returns the View of message i of b, which must be valid.
func viewOf(t *testing.T, b []byte, i int) View {
	t.Helper()
	var it Iterator
	if err := it.Init(b); err != nil {
		t.Fatal(err)
	}
	for range i + 1 {
		if !it.Next() {
			t.Fatalf("no message %d: %v", i, it.Err())
		}
	}
	return it.View()
}

func TestCorruptBatches(t *testing.T) {
	put16 := func(off, n int) func([]byte, View) []byte {
		return func(b []byte, v View) []byte { le.PutUint16(b[v.Pos()+off:], uint16(n)); return b }
	}
	put32 := func(off func(View) int, n uint32) func([]byte, View) []byte {
		return func(b []byte, v View) []byte { le.PutUint32(b[v.Pos()+off(v):], n); return b }
	}
	at := func(off int) func(View) int { return func(View) int { return off } }
	tests := []struct {
		name   string
		mutate func(b []byte, v View) []byte // v: the first message of b
		want   error
	}{
		{"count one more", func(b []byte, _ View) []byte { b[4]++; return b }, ErrTruncated},
		{"count one less", func(b []byte, _ View) []byte { b[4]--; return b }, ErrCorrupt},
		{"count zero", func(b []byte, _ View) []byte { b[4] = 0; return b }, ErrCorrupt},
		{"trailing byte", func(b []byte, _ View) []byte { return append(b, 0) }, ErrCorrupt},
		{"trailing zero message slot", func(b []byte, _ View) []byte { return append(b, zeros[:]...) }, ErrCorrupt},
		{"message too long", put32(at(offLength), MaxMessageBytes+1), ErrTooLarge},
		{"message length max u32", put32(at(offLength), 1<<32-1), ErrTooLarge},
		{"message below minimum", put32(at(offLength), minMessageBytes-1), ErrCorrupt},
		{"message length one short", func(b []byte, v View) []byte { return put32(at(offLength), uint32(v.Len()-1))(b, v) }, ErrCorrupt},
		{"message length one long", func(b []byte, v View) []byte { return put32(at(offLength), uint32(v.Len()+1))(b, v) }, ErrCorrupt},
		{"message length past batch", put32(at(offLength), 400), ErrTruncated},
		{"reserved", put32(at(offReserved), 1), ErrCorrupt},
		{"padding", func(b []byte, v View) []byte { b[v.Pos()+v.Len()] = 1; return b }, ErrCorrupt},
		{"born host overruns", put16(fixedBytes, MaxStringBytes), ErrCorrupt},
		{"too many keys", func(b []byte, v View) []byte { return put16(v.keys, MaxKeys+1)(b, v) }, ErrTooLarge},
		{"too many properties", func(b []byte, v View) []byte { return put16(v.props, MaxProperties+1)(b, v) }, ErrTooLarge},
		{"property value overruns", put32(func(v View) int { return v.props + 2 + 2 + 1 }, 1<<32-1), ErrCorrupt},
		{"too many destinations", func(b []byte, v View) []byte { return put16(v.dests, MaxDestinations+1)(b, v) }, ErrTooLarge},
		{"destinations overrun", func(b []byte, v View) []byte { return put16(v.dests, 3)(b, v) }, ErrCorrupt},
		{"body overruns", put32(func(v View) int { return v.body }, 1<<32-1), ErrCorrupt},
		{"body shorter", put32(func(v View) int { return v.body }, 7), ErrCorrupt},
	}
	for _, tt := range tests {
		b := Fixtures()[1].Raw
		b = tt.mutate(b, viewOf(t, b, 0))
		if err := walk(b); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestZeroDestinations(t *testing.T) {
	// appendMessage skips Add's checks, so this message is well formed
	// except for its destination count. Its body makes up for the missing
	// destination's bytes, so the batch is not rejected as too short.
	m := validMessage()
	m.Destinations = nil
	m.Body = make([]byte, 64)
	b := appendHeader(nil, Header{Kind: KindMessages, Count: 1})
	b = appendMessage(b, &m, int(messageLen(&m)))
	if err := walk(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func TestBatchTooLarge(t *testing.T) {
	b := make([]byte, MaxBatchBytes+AlignBytes)
	copy(b, Fixtures()[0].Raw[:HeaderBytes])
	if err := walk(b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestBodyChecksum(t *testing.T) {
	b := Fixtures()[0].Raw
	v := viewOf(t, b, 0)
	v.Body()[0] ^= 1
	if v.VerifyBody() {
		t.Error("VerifyBody true after flipping a body bit")
	}
	if err := walk(b); err != nil {
		t.Errorf("Iterator checks structure only, got %v", err)
	}
	if _, err := v.Decode(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Decode: %v, want ErrCorrupt", err)
	}
	if _, _, err := DecodeMessage(b[v.Pos():]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeMessage: %v, want ErrCorrupt", err)
	}
}

func TestDecodeMessageIgnoresWhatFollows(t *testing.T) {
	fx := Fixtures()[1]
	m, v, err := DecodeMessage(fx.Raw[HeaderBytes:])
	if err != nil || !reflect.DeepEqual(m, fx.Messages[0]) || v.Pos() != 0 {
		t.Fatalf("got %+v, %v", m, err)
	}
}

func validMessage() Message {
	return Message{Topic: "t", Destinations: []Destination{{Topic: "t"}}, Body: []byte("b")}
}

func TestEncoderLimits(t *testing.T) {
	long := strings.Repeat("x", MaxStringBytes+1)
	tests := []struct {
		name   string
		mutate func(m *Message)
		want   error
	}{
		{"no destinations", func(m *Message) { m.Destinations = nil }, ErrNoDestination},
		{"destinations", func(m *Message) { m.Destinations = make([]Destination, MaxDestinations+1) }, ErrTooLarge},
		{"keys", func(m *Message) { m.Keys = make([]string, MaxKeys+1) }, ErrTooLarge},
		{"properties", func(m *Message) { m.Properties = make([]Property, MaxProperties+1) }, ErrTooLarge},
		{"born host", func(m *Message) { m.BornHost = long }, ErrTooLarge},
		{"topic", func(m *Message) { m.Topic = long }, ErrTooLarge},
		{"tags", func(m *Message) { m.Tags = long }, ErrTooLarge},
		{"key", func(m *Message) { m.Keys = []string{long} }, ErrTooLarge},
		{"property key", func(m *Message) { m.Properties = []Property{{Key: long}} }, ErrTooLarge},
		{"destination topic", func(m *Message) { m.Destinations[0].Topic = long }, ErrTooLarge},
		{"message", func(m *Message) {
			m.Body = make([]byte, MaxMessageBytes+1-int(messageLen(m))+len(m.Body))
		}, ErrTooLarge},
	}
	var e Encoder
	e.Reset(9, 9)
	ok := validMessage()
	if err := e.Add(&ok); err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(e.Bytes())
	for _, tt := range tests {
		m := validMessage()
		tt.mutate(&m)
		if err := e.Add(&m); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
		if e.Count() != 1 || !bytes.Equal(e.Bytes(), before) {
			t.Fatalf("%s: failed Add changed the batch", tt.name)
		}
	}
}

func TestEncoderAtLimits(t *testing.T) {
	full := strings.Repeat("m", MaxStringBytes)
	m := Message{BornHost: full, Topic: full, Tags: full}
	for range MaxKeys {
		m.Keys = append(m.Keys, full[:100])
	}
	for range MaxProperties {
		m.Properties = append(m.Properties, Property{Key: full[:10], Value: full[:10]})
	}
	m.Properties[0].Key = full
	m.Keys[0] = full
	for range MaxDestinations {
		m.Destinations = append(m.Destinations, Destination{Topic: "d"})
	}
	m.Destinations[0].Topic = full
	m.Body = make([]byte, MaxMessageBytes-int(messageLen(&m)))
	h := Header{Kind: KindMessages, Count: 1}
	_, got, err := decodeAll(t, encode(t, h, []Message{m}))
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], m) {
		t.Fatalf("message at every limit did not round-trip: %v", err)
	}
}

func TestEncoderBatchLimit(t *testing.T) {
	m := validMessage()
	m.Body = make([]byte, MaxMessageBytes-int(messageLen(&m))+len(m.Body))
	var e Encoder
	// Three maximal messages fit; a fourth would pass 64 MiB by the header.
	for i := range 4 {
		err := e.Add(&m)
		if want := i == 3; errors.Is(err, ErrTooLarge) != want {
			t.Fatalf("Add %d: %v", i, err)
		}
	}
	if err := walk(e.Bytes()); err != nil {
		t.Fatal(err)
	}
}

func TestSetQueueOffset(t *testing.T) {
	fx := Fixtures()[1]
	var it Iterator
	if err := it.Init(fx.Raw); err != nil {
		t.Fatal(err)
	}
	for i := 0; it.Next(); i++ {
		v := it.View()
		for j := range v.NumDestinations() {
			off := uint64(1000*i + j)
			if err := SetQueueOffset(fx.Raw, v.Pos(), j, off); err != nil {
				t.Fatal(err)
			}
			fx.Messages[i].Destinations[j].QueueOffset = off
		}
	}
	if _, got, err := decodeAll(t, fx.Raw); err != nil || !reflect.DeepEqual(got, fx.Messages) {
		t.Fatalf("after SetQueueOffset decoded %+v, %v; want %+v", got, err, fx.Messages)
	}

	before := slices.Clone(fx.Raw)
	pos := viewOf(t, fx.Raw, 1).Pos()
	for _, bad := range []struct{ pos, dest int }{
		{-8, 0}, {0, 0}, {HeaderBytes - 1, 0}, {HeaderBytes + 1, 0}, {len(fx.Raw), 0},
		{pos, -1}, {pos, 2},
	} {
		if err := SetQueueOffset(fx.Raw, bad.pos, bad.dest, 1); err == nil {
			t.Errorf("SetQueueOffset(pos %d, dest %d) succeeded", bad.pos, bad.dest)
		}
	}
	if !bytes.Equal(fx.Raw, before) {
		t.Error("a failed SetQueueOffset modified the batch")
	}
}

func TestDestinationOutOfRangePanics(t *testing.T) {
	v := viewOf(t, Fixtures()[0].Raw, 0)
	defer func() {
		if recover() == nil {
			t.Error("Destination(1) of a one-destination message did not panic")
		}
	}()
	v.Destination(1)
}

func TestViewSlicesAreCapped(t *testing.T) {
	b := Fixtures()[1].Raw
	before := slices.Clone(b)
	v := viewOf(t, b, 0)
	_ = append(v.Topic(), "clobber"...)
	_ = append(v.Body(), "clobber"...)
	if !bytes.Equal(b, before) {
		t.Error("appending to a View slice wrote into the batch")
	}
}

func TestJavaStringHash(t *testing.T) {
	tests := []struct {
		s    string
		want int64
	}{
		// Values printed by Java's "...".hashCode().
		{"TagA", 2598919},
		{"", 0},
		{"hello", 99162322},
		{"*", 42},
		{"Hello World", -862545276}, // wraps past int32
		{"é", 233},                  // one UTF-16 unit, two UTF-8 bytes
		{"😀", 1772899},              // surrogate pair: 0xD83D*31 + 0xDE00 = 1716067 + 56832
		{"a😀bé中", -240991678},
		{"\xff", 0xFFFD}, // invalid UTF-8 hashes as U+FFFD
	}
	for _, tt := range tests {
		if got := JavaStringHash(tt.s); got != tt.want {
			t.Errorf("JavaStringHash(%q) = %d, want %d", tt.s, got, tt.want)
		}
	}
}
