package transport

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/iotest"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// goldenHandshake is a handshake and its exact encoding (doc.go, Encoding).
var goldenHandshake = struct {
	h   handshake
	raw []byte
}{
	h: handshake{clusterID: 0x0102030405060708, from: 1, to: 0x1122},
	raw: []byte{
		'C', 'F', 'X', 'R', 'A', 'F', 'T', '1', // magic "CFXRAFT1"
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // cluster id 0x0102030405060708
		0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sender id 1
		0x22, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // recipient id 0x1122
	},
}

// goldenFrames are messages and their exact frames. The payload is gogo's
// protobuf encoding, which writes every non-nullable field, zeros included;
// it is pinned here so that a change of raftpb's encoding (which would break
// mixed-version clusters) shows up as a test failure.
var goldenFrames = []struct {
	name string
	m    raftpb.Message
	raw  []byte
}{
	{
		name: "heartbeat",
		m:    raftpb.Message{Type: raftpb.MsgHeartbeat, To: 2, From: 1, Term: 5, Commit: 7},
		raw: []byte{
			0x1e, 0x00, 0x00, 0x00, // payload length 30
			0x08, 0x08, // field 1 type: 8 MsgHeartbeat
			0x10, 0x02, // field 2 to: 2
			0x18, 0x01, // field 3 from: 1
			0x20, 0x05, // field 4 term: 5
			0x28, 0x00, // field 5 logTerm: 0
			0x30, 0x00, // field 6 index: 0
			0x40, 0x07, // field 8 commit: 7
			0x4a, 0x0a, // field 9 snapshot, 10 bytes:
			0x12, 0x08, //   field 2 metadata, 8 bytes:
			0x0a, 0x02, //     field 1 conf_state, 2 bytes:
			0x28, 0x00, //       field 5 auto_leave: false
			0x10, 0x00, //     field 2 index: 0
			0x18, 0x00, //     field 3 term: 0
			0x50, 0x00, // field 10 reject: false
			0x58, 0x00, // field 11 rejectHint: 0
		},
	},
	{
		name: "append with one entry",
		m: raftpb.Message{Type: raftpb.MsgApp, To: 3, From: 1, Term: 2, LogTerm: 2, Index: 9, Commit: 9,
			Entries: []raftpb.Entry{{Term: 2, Index: 10, Type: raftpb.EntryNormal, Data: []byte("hi")}}},
		raw: []byte{
			0x2a, 0x00, 0x00, 0x00, // payload length 42
			0x08, 0x03, // field 1 type: 3 MsgApp
			0x10, 0x03, // field 2 to: 3
			0x18, 0x01, // field 3 from: 1
			0x20, 0x02, // field 4 term: 2
			0x28, 0x02, // field 5 logTerm: 2
			0x30, 0x09, // field 6 index: 9
			0x3a, 0x0a, // field 7 entries[0], 10 bytes:
			0x08, 0x00, //   field 1 type: EntryNormal
			0x10, 0x02, //   field 2 term: 2
			0x18, 0x0a, //   field 3 index: 10
			0x22, 0x02, 'h', 'i', //   field 4 data: "hi"
			0x40, 0x09, // field 8 commit: 9
			0x4a, 0x0a, 0x12, 0x08, 0x0a, 0x02, 0x28, 0x00, 0x10, 0x00, 0x18, 0x00, // field 9 snapshot: empty, as above
			0x50, 0x00, // field 10 reject: false
			0x58, 0x00, // field 11 rejectHint: 0
		},
	},
}

func TestGoldenHandshake(t *testing.T) {
	g := goldenHandshake
	if got := appendHandshake(nil, g.h); !bytes.Equal(got, g.raw) {
		t.Fatalf("appendHandshake:\n got % x\nwant % x", got, g.raw)
	}
	h, err := readHandshake(bytes.NewReader(g.raw))
	if err != nil || h != g.h {
		t.Fatalf("readHandshake = %+v, %v; want %+v", h, err, g.h)
	}
}

func TestGoldenFrames(t *testing.T) {
	for _, g := range goldenFrames {
		t.Run(g.name, func(t *testing.T) {
			got, err := encodeFrame(&g.m, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, g.raw) {
				t.Fatalf("encodeFrame:\n got % x\nwant % x", got, g.raw)
			}
			payload, err := readFrame(bytes.NewReader(g.raw), nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			m, err := decodeMessage(payload)
			if err != nil {
				t.Fatal(err)
			}
			if !sameMessage(m, g.m) {
				t.Fatalf("decoded %v, want %v", m.String(), g.m.String())
			}
		})
	}
}

func TestHandshakeCheck(t *testing.T) {
	const cluster, self = 7, 2
	cases := []struct {
		h  handshake
		ok bool
	}{
		{handshake{clusterID: cluster, from: 1, to: self}, true},
		{handshake{clusterID: cluster + 1, from: 1, to: self}, false},
		{handshake{clusterID: cluster, from: 1, to: self + 1}, false},
		{handshake{clusterID: cluster, from: 0, to: self}, false},
		{handshake{clusterID: cluster, from: self, to: self}, false},
	}
	for _, c := range cases {
		err := c.h.check(cluster, self)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, errBadHandshake)) {
			t.Errorf("%+v.check = %v, want ok=%v", c.h, err, c.ok)
		}
	}
	bad := bytes.Clone(goldenHandshake.raw)
	bad[7] = '2'
	if _, err := readHandshake(bytes.NewReader(bad)); !errors.Is(err, errBadMagic) {
		t.Errorf("readHandshake with magic CFXRAFT2 = %v, want errBadMagic", err)
	}
	if _, err := readHandshake(bytes.NewReader(goldenHandshake.raw[:31])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("readHandshake of 31 bytes = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	const maxFrame = 100
	frame := func(n uint32, payload ...byte) []byte {
		return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}, payload...)
	}
	cases := []struct {
		name string
		in   []byte
		want error // nil: a valid frame
	}{
		{"no input", nil, io.EOF},
		{"torn header", []byte{1, 0}, io.ErrUnexpectedEOF},
		{"torn payload", frame(3, 1, 2), io.ErrUnexpectedEOF},
		{"one over the limit", frame(maxFrame + 1), errFrameTooLarge},
		{"largest length", frame(1<<32 - 1), errFrameTooLarge},
		{"empty message", frame(0), nil},
		{"exactly the limit", frame(maxFrame, make([]byte, maxFrame)...), nil},
	}
	for _, c := range cases {
		_, err := readFrame(bytes.NewReader(c.in), nil, maxFrame)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: readFrame = %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := readFrame(bytes.NewReader(nil), nil, maxFrame); err != io.EOF {
		t.Errorf("a clean end must be io.EOF itself, got %v", err)
	}
	if _, err := decodeMessage([]byte{0xff, 0xff, 0xff}); !errors.Is(err, errBadMessage) {
		t.Errorf("decodeMessage(garbage) = %v, want errBadMessage", err)
	}
}

// TestReadFrameLyingLength: a peer that announces a huge (but allowed)
// frame and sends a few bytes must not make the reader allocate the
// announced size.
func TestReadFrameLyingLength(t *testing.T) {
	const announced = 512 << 20
	in := append([]byte{0, 0, 0, announced >> 24}, make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := readFrame(bytes.NewReader(in), nil, 1<<30)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readFrame = %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 4*eagerAllocBytes {
		t.Fatalf("allocated %d bytes for a frame that sent 100", got)
	}
}

// TestReadFrameLarge reads frames past eagerAllocBytes through a reader
// that returns short reads, so the growing path meets every boundary.
func TestReadFrameLarge(t *testing.T) {
	for _, n := range []int{eagerAllocBytes, eagerAllocBytes + 1, 2*eagerAllocBytes + 5, 5 * eagerAllocBytes} {
		m := appOfSize(1, 2, n)
		raw, err := encodeFrame(&m, n)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := readFrame(iotest.HalfReader(bytes.NewReader(raw)), make([]byte, 0, 10), n)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(payload) != n || cap(payload) != n || !bytes.Equal(payload, raw[frameHeaderBytes:]) {
			t.Fatalf("n=%d: got len %d cap %d, bytes equal %v", n, len(payload), cap(payload), bytes.Equal(payload, raw[frameHeaderBytes:]))
		}
	}
}

func TestEncodeFrameTooLarge(t *testing.T) {
	m := appOfSize(1, 2, 1000)
	if _, err := encodeFrame(&m, 999); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("encodeFrame over the limit = %v, want errFrameTooLarge", err)
	}
	if _, err := encodeFrame(&m, 1000); err != nil {
		t.Fatalf("encodeFrame at the limit: %v", err)
	}
}

// TestFrameRoundTrip writes many random messages back to back into one
// stream and reads them all back, reusing the read buffer as the transport
// does.
func TestFrameRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var stream []byte
	var want []raftpb.Message
	for range 500 {
		m := randomMessage(rng, 1, 2)
		raw, err := encodeFrame(&m, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, raw...)
		want = append(want, m)
	}
	r := iotest.HalfReader(bytes.NewReader(stream))
	var buf []byte
	for i, w := range want {
		payload, err := readFrame(r, buf, 1<<20)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		m, err := decodeMessage(payload)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !sameMessage(m, w) {
			t.Fatalf("frame %d: got %s, want %s", i, m.String(), w.String())
		}
		buf = payload[:0]
	}
	if _, err := readFrame(r, buf, 1<<20); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

// FuzzReadHandshake: arbitrary bytes never panic, and whatever decodes is
// exactly the first 32 bytes of the input.
func FuzzReadHandshake(f *testing.F) {
	f.Add(goldenHandshake.raw)
	f.Add(goldenHandshake.raw[:20])
	f.Add([]byte("CFXRAFT2" + string(goldenHandshake.raw[8:])))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readHandshake(bytes.NewReader(b))
		if err != nil {
			if len(b) >= handshakeBytes && string(b[:8]) == handshakeMagic {
				t.Fatalf("rejected a well-formed handshake: %v", err)
			}
			return
		}
		if got := appendHandshake(nil, h); !bytes.Equal(got, b[:handshakeBytes]) {
			t.Fatalf("re-encoding gives % x, input % x", got, b[:handshakeBytes])
		}
		_ = h.check(1, 2)
	})
}

// FuzzReadFrame reads frames from arbitrary bytes until an error, as a
// connection's reader does. It must never panic, never return (or allocate)
// a payload beyond the limit, and every message it decodes must survive a
// re-encoding unchanged.
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, g := range goldenFrames {
		f.Add(uint16(100), g.raw)
		stream = append(stream, g.raw...)
	}
	f.Add(uint16(1000), stream)
	f.Add(uint16(10), stream)
	f.Add(uint16(0), []byte{0, 0, 0, 0})
	f.Add(uint16(65535), []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Fuzz(func(t *testing.T, maxFrame uint16, b []byte) {
		limit := int(maxFrame)
		r := bytes.NewReader(b)
		var buf []byte
		for {
			payload, err := readFrame(r, buf, limit)
			if err != nil {
				return
			}
			if len(payload) > limit || cap(payload) > limit {
				t.Fatalf("payload len %d cap %d over the limit %d", len(payload), cap(payload), limit)
			}
			if m, err := decodeMessage(payload); err == nil {
				checkReencode(t, m)
			}
			buf = payload[:0]
		}
	})
}

// checkReencode: decode(encode(m)) must equal m, byte for byte once encoded.
func checkReencode(t *testing.T, m raftpb.Message) {
	t.Helper()
	raw, err := encodeFrame(&m, 1<<30)
	if err != nil {
		t.Fatalf("re-encoding a decoded message: %v", err)
	}
	m2, err := decodeMessage(raw[frameHeaderBytes:])
	if err != nil {
		t.Fatalf("decoding a re-encoded message: %v", err)
	}
	if !sameMessage(m, m2) {
		t.Fatalf("round trip changed the message:\n%s\n%s", m.String(), m2.String())
	}
}
