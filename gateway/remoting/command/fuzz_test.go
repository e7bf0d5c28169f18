package command

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// fuzzMaxFrameBytes is the limit FuzzReadFrame decodes with: small enough
// that allocating a declared length instead of the bytes present shows.
const fuzzMaxFrameBytes = 1 << 20

// FuzzReadFrame: arbitrary bytes never panic; errors are the package's
// sentinels (or io.EOF for no input); memory follows the bytes present, not
// the lengths declared; ReadFrame and DecodeFrame agree; anything decoded
// re-encodes, decodes to the same command and re-encodes to the same bytes.
func FuzzReadFrame(f *testing.F) {
	for _, fx := range Fixtures() {
		f.Add(fx.RawBytes)
		f.Add(fx.RawBytes[:len(fx.RawBytes)/2])
	}
	f.Add([]byte{})
	f.Add(prefix(0x7FFFFFFF, 2))
	f.Add(append(prefix(fuzzMaxFrameBytes-4, 2), "{}"...))
	f.Add(rawFrame(0, []byte(`{"code":105,"language":9,"extFields":{"a":null,"b":"\u0001"},"x":[1,{}]}`), []byte("body")))
	f.Add(rawFrame(1, binHeader(0, nil, 7, extEntry(1, "k", 0, "")), nil))

	f.Fuzz(func(t *testing.T, b []byte) {
		// totalAlloc uses runtime.ReadMemStats, which flushes every P's
		// cache: exact, unlike runtime/metrics' heap counters, which count
		// small objects late (a first version of this check measured other
		// iterations' allocations and failed at random).
		before := totalAlloc()
		cmd, err := ReadFrame(bytes.NewReader(b), fuzzMaxFrameBytes)
		allocated := totalAlloc() - before
		if bound := 64*uint64(len(b)) + 2*eagerAllocBytes + 64<<10; allocated > bound {
			t.Fatalf("ReadFrame allocated %d bytes for %d input bytes (bound %d)", allocated, len(b), bound)
		}
		cmd2, n, err2 := DecodeFrame(b, fuzzMaxFrameBytes)
		if err != nil {
			if err != io.EOF && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("ReadFrame error is no sentinel: %v", err)
			}
			if err2 == nil {
				t.Fatalf("ReadFrame failed (%v) but DecodeFrame decoded %v", err, cmd2)
			}
			return
		}
		if err2 != nil || !reflect.DeepEqual(cmd, cmd2) {
			t.Fatalf("ReadFrame decoded %v; DecodeFrame %v, %v", cmd, cmd2, err2)
		}
		if n > len(b) || n < prefixBytes {
			t.Fatalf("DecodeFrame took %d of %d bytes", n, len(b))
		}

		enc, err := AppendFrame(nil, cmd)
		if err != nil {
			t.Fatalf("AppendFrame(%v): %v", cmd, err)
		}
		// A re-encoded JSON header can be longer than the input (defaults
		// written out, language 13 becomes "NODE_JS"), so no small limit.
		again, m, err := DecodeFrame(enc, DefaultMaxFrameBytes)
		if err != nil || m != len(enc) {
			t.Fatalf("decoding the re-encoded frame: %v (took %d of %d)\ninput %q\nframe %q", err, m, len(enc), b, enc)
		}
		if !reflect.DeepEqual(again, cmd) {
			t.Fatalf("re-encoded frame decodes differently:\n got %#v\nwant %#v", again, cmd)
		}
		enc2, err := AppendFrame(nil, again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not a fixed point: %v\n%q\n%q", err, enc, enc2)
		}
	})
}
