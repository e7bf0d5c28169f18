package command

import (
	"bytes"
	"encoding/json"
	"flag"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var seedFlag = flag.Uint64("seed", 0, "seed for TestRoundTripRandom (0: time-based)")

// TestRoundTripRandom: decode(encode(c)) == c for random commands in both
// serializations, and encoding is deterministic.
func TestRoundTripRandom(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range 3000 {
		cmd := randomCommand(rng, SerializeType(i%2))
		enc, err := AppendFrame(nil, cmd)
		if err != nil {
			t.Fatalf("#%d AppendFrame(%v): %v", i, cmd, err)
		}
		got, n, err := DecodeFrame(enc, len(enc))
		if err != nil {
			t.Fatalf("#%d DecodeFrame: %v\ncommand %v\nframe %q", i, err, cmd, enc)
		}
		if n != len(enc) {
			t.Fatalf("#%d took %d of %d bytes", i, n, len(enc))
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Fatalf("#%d round trip:\n got %#v\nwant %#v", i, got, cmd)
		}
		got2, err := ReadFrame(bytes.NewReader(enc), len(enc))
		if err != nil || !reflect.DeepEqual(got2, cmd) {
			t.Fatalf("#%d ReadFrame: %v, %v", i, got2, err)
		}
		if again, _ := AppendFrame(nil, got); !bytes.Equal(again, enc) {
			t.Fatalf("#%d encoding not deterministic:\n%q\n%q", i, enc, again)
		}
		if cmd.SerializeType == JSON {
			// The header is standard JSON: encoding/json reads it into a
			// generic value too (what a Java or jsoniter reader would see).
			var v map[string]any
			if err := json.Unmarshal(enc[prefixBytes:prefixBytes+headerLenOf(enc)], &v); err != nil {
				t.Fatalf("#%d header is not JSON: %v", i, err)
			}
		}
	}
}

func headerLenOf(frame []byte) int {
	return int(frame[5])<<16 | int(frame[6])<<8 | int(frame[7])
}

// randomCommand returns a command that must survive a round trip in typ:
// JSON strings are valid UTF-8 (invalid bytes come back as U+FFFD), binary
// codes fit int16 and languages have byte codes.
func randomCommand(rng *rand.Rand, typ SerializeType) *RemotingCommand {
	c := &RemotingCommand{
		Code:          rng.Int32() - rng.Int32(),
		Version:       int16(rng.Uint32()),
		Opaque:        rng.Int32() - rng.Int32(),
		Flag:          rng.Int32() - rng.Int32(),
		ExtFields:     map[string]string{},
		SerializeType: typ,
	}
	if rng.IntN(3) == 0 {
		c.Code = int32(rng.IntN(400))
	}
	if typ == RocketMQ {
		c.Code = int32(int16(c.Code))
		c.Language = LanguageOf(byte(rng.UintN(256)))
	} else if rng.IntN(4) > 0 {
		c.Language = LanguageCode(randomString(rng, typ, 12))
	}
	if rng.IntN(2) == 0 {
		c.Remark = randomString(rng, typ, 80)
	}
	for range rng.IntN(20) {
		c.ExtFields[randomString(rng, typ, 16)] = randomString(rng, typ, 60)
	}
	if n := rng.IntN(300); n > 0 && rng.IntN(3) > 0 {
		c.Body = make([]byte, n)
		for i := range c.Body {
			c.Body[i] = byte(rng.UintN(256))
		}
	}
	return c
}

// randomString mixes the characters that stress JSON escaping and UTF-8
// handling: controls, quotes, backslashes, RocketMQ's separators, multi-byte
// runes and (binary only) arbitrary bytes.
func randomString(rng *rand.Rand, typ SerializeType, maxLen int) string {
	pieces := []string{"a", "Z", "0", " ", "\"", "\\", "/", "\x00", "\x01", "\x02", "\n", "\r", "\t", "\x1f", "\x7f",
		"é", "中", "\u2028", "\U0001F600", "\uFFFD", "<", ">", "&", "%RETRY%", "TopicTest"}
	var b strings.Builder
	for range rng.IntN(maxLen + 1) {
		if typ == RocketMQ && rng.IntN(8) == 0 {
			b.WriteByte(byte(rng.UintN(256)))
			continue
		}
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	s := b.String()
	if typ == JSON && !utf8.ValidString(s) {
		panic("randomString made invalid UTF-8 for JSON")
	}
	return s
}

// TestJSONInvalidUTF8: invalid UTF-8 cannot travel in JSON; it goes out as
// U+FFFD, as Java's String conversion would make it.
func TestJSONInvalidUTF8(t *testing.T) {
	c := &RemotingCommand{Language: LanguageGo, Remark: "a\xffb", ExtFields: map[string]string{"k\xfe": "\xc3"}}
	enc, err := AppendFrame(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(enc, []byte(`"remark":"a\ufffdb"`)) || !bytes.Contains(enc, []byte(`{"k\ufffd":"\ufffd"}`)) {
		t.Errorf("frame %q", enc)
	}
	got, _, err := DecodeFrame(enc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Remark != "a\uFFFDb" || got.ExtFields["k\uFFFD"] != "\uFFFD" {
		t.Errorf("decoded %v", got)
	}
}

// TestJSONEscapes pins the exact escapes AppendFrame writes.
func TestJSONEscapes(t *testing.T) {
	c := &RemotingCommand{Remark: "q\"b\\s/n\nr\rt\tc\x01\x02\x1f\x7fé<>&\u2028"}
	enc, err := AppendFrame(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"code":0,"version":0,"opaque":0,"flag":0,"remark":"q\"b\\s/n\nr\rt\tc\u0001\u0002\u001f` + "\x7fé<>&\u2028" + `","extFields":{}}`
	if got := string(enc[prefixBytes:]); got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}
