package command

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// TestFixtures: every golden frame decodes to its command, through both
// DecodeFrame and ReadFrame, and (unless DecodeOnly) encodes to its bytes.
func TestFixtures(t *testing.T) {
	for _, fx := range Fixtures() {
		t.Run(fx.Name, func(t *testing.T) {
			got, n, err := DecodeFrame(fx.RawBytes, 0)
			if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			if n != len(fx.RawBytes) {
				t.Errorf("DecodeFrame took %d bytes, want %d", n, len(fx.RawBytes))
			}
			if !reflect.DeepEqual(got, &fx.Command) {
				t.Errorf("DecodeFrame:\n got %v\nwant %v", got, &fx.Command)
			}

			r := bytes.NewReader(fx.RawBytes)
			got, err = ReadFrame(r, 0)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if !reflect.DeepEqual(got, &fx.Command) {
				t.Errorf("ReadFrame:\n got %v\nwant %v", got, &fx.Command)
			}
			if _, err := ReadFrame(r, 0); err != io.EOF {
				t.Errorf("ReadFrame after the frame: %v, want io.EOF", err)
			}

			enc, err := AppendFrame(nil, &fx.Command)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if !fx.DecodeOnly && !bytes.Equal(enc, fx.RawBytes) {
				t.Errorf("AppendFrame:\n got %q\nwant %q", enc, fx.RawBytes)
			}
			again, _, err := DecodeFrame(enc, 0)
			if err != nil || !reflect.DeepEqual(again, &fx.Command) {
				t.Errorf("decode(encode(fixture)) = %v, %v; want %v", again, err, &fx.Command)
			}
		})
	}
}

// TestFixturesTruncated: every proper prefix of every golden frame is an
// error (ErrTruncated), on a buffer and on a stream; no prefix panics.
func TestFixturesTruncated(t *testing.T) {
	for _, fx := range Fixtures() {
		for k := range len(fx.RawBytes) {
			part := fx.RawBytes[:k]
			if _, _, err := DecodeFrame(part, 0); !errors.Is(err, ErrTruncated) {
				t.Errorf("%s: DecodeFrame(first %d bytes) = %v, want ErrTruncated", fx.Name, k, err)
			}
			_, err := ReadFrame(bytes.NewReader(part), 0)
			switch {
			case k == 0:
				if err != io.EOF {
					t.Errorf("%s: ReadFrame(empty) = %v, want io.EOF", fx.Name, err)
				}
			case !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF):
				t.Errorf("%s: ReadFrame(first %d bytes) = %v, want ErrTruncated and io.ErrUnexpectedEOF", fx.Name, k, err)
			}
		}
	}
}

// TestFixturesHeaderCut: a frame whose lengths are consistent but whose
// header is a proper prefix of a golden header is ErrMalformed.
func TestFixturesHeaderCut(t *testing.T) {
	for _, fx := range Fixtures() {
		word := binary.BigEndian.Uint32(fx.RawBytes[4:])
		typ, headerLen := byte(word>>24), int(word&0xFFFFFF)
		header := fx.RawBytes[prefixBytes : prefixBytes+headerLen]
		for c := range headerLen {
			frame := rawFrame(typ, header[:c], nil)
			if _, _, err := DecodeFrame(frame, 0); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: header cut to %d of %d bytes: %v, want ErrMalformed", fx.Name, c, headerLen, err)
			}
		}
	}
}

// rawFrame builds a frame around any header bytes, lengths consistent.
func rawFrame(typ byte, header, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(4+len(header)+len(body)))
	b = binary.BigEndian.AppendUint32(b, uint32(typ)<<24|uint32(len(header)))
	b = append(b, header...)
	return append(b, body...)
}

func prefix(length uint32, word uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	return binary.BigEndian.AppendUint32(b, word)
}

func TestFrameLengthLimits(t *testing.T) {
	// A frame of exactly the limit passes; one byte more does not.
	const limit = 100
	body := bytes.Repeat([]byte{'x'}, limit-prefixBytes-2)
	exact := rawFrame(0, []byte("{}"), body)
	if len(exact) != limit {
		t.Fatalf("test frame is %d bytes", len(exact))
	}
	if _, _, err := DecodeFrame(exact, limit); err != nil {
		t.Errorf("frame of exactly the limit: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader(exact), limit); err != nil {
		t.Errorf("ReadFrame, frame of exactly the limit: %v", err)
	}
	over := rawFrame(0, []byte("{}"), append(body, 'x'))
	if _, _, err := DecodeFrame(over, limit); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("frame one byte over the limit: %v, want ErrFrameTooLarge", err)
	}
	if _, err := ReadFrame(bytes.NewReader(over), limit); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("ReadFrame, frame one byte over the limit: %v, want ErrFrameTooLarge", err)
	}

	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"length 0", prefix(0, 0), ErrMalformed},
		{"length 3", prefix(3, 0), ErrMalformed},
		{"length negative", prefix(0xFFFFFFF0, 2), ErrMalformed},
		{"length max int32", prefix(0x7FFFFFFF, 2), ErrFrameTooLarge},
		{"length just over default", prefix(DefaultMaxFrameBytes-3, 2), ErrFrameTooLarge},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrFrameTooLarge},
		{"TLS client hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, ErrFrameTooLarge},
		{"serialize type 2", prefix(6, 2<<24|2), ErrMalformed},
		{"serialize type 0xff", prefix(6, 0xFF<<24|2), ErrMalformed},
		{"header length > frame", prefix(10, 7), ErrMalformed},
		{"header length 16M-1 > frame", prefix(10, 0xFFFFFF), ErrMalformed},
		{"binary header length > frame", prefix(30, 1<<24|27), ErrMalformed},
		{"JSON header shorter than {}", prefix(5, 1), ErrMalformed},
		{"JSON header empty", prefix(4, 0), ErrMalformed},
		{"binary header shorter than 21", prefix(24, 1<<24|20), ErrMalformed},
	}
	for _, c := range cases {
		// The prefix alone decides: no body bytes need to be present.
		if _, _, err := DecodeFrame(c.b, 0); !errors.Is(err, c.want) {
			t.Errorf("%s: DecodeFrame = %v, want %v", c.name, err, c.want)
		}
		if _, err := ReadFrame(bytes.NewReader(c.b), 0); !errors.Is(err, c.want) {
			t.Errorf("%s: ReadFrame = %v, want %v", c.name, err, c.want)
		}
	}
}

// countingReader counts bytes read, to show ReadFrame stops at the prefix.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestFrameTooLargeBeforeAllocation: an oversized length is rejected after
// reading 4 bytes and allocating nothing for the frame.
func TestFrameTooLargeBeforeAllocation(t *testing.T) {
	stream := append(prefix(0x7FFFFFF0, 1<<24|21), make([]byte, 1024)...)
	cr := &countingReader{r: bytes.NewReader(stream)}
	before := totalAlloc()
	_, err := ReadFrame(cr, DefaultMaxFrameBytes)
	allocated := totalAlloc() - before
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadFrame = %v, want ErrFrameTooLarge", err)
	}
	if cr.n != 4 {
		t.Errorf("ReadFrame read %d bytes, want 4 (the length field only)", cr.n)
	}
	if allocated > 16<<10 {
		t.Errorf("ReadFrame allocated %d bytes for a rejected frame", allocated)
	}
}

// TestLyingLength: a peer announcing a frame just under the limit and then
// sending a few bytes costs at most the first 64 KiB chunk, not the frame.
func TestLyingLength(t *testing.T) {
	length := uint32(DefaultMaxFrameBytes - 4)
	stream := append(prefix(length, 2), []byte("{}")...)
	stream = append(stream, make([]byte, 100)...)
	before := totalAlloc()
	_, err := ReadFrame(bytes.NewReader(stream), 0)
	allocated := totalAlloc() - before
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("ReadFrame = %v, want ErrTruncated", err)
	}
	if allocated > 2*eagerAllocBytes {
		t.Errorf("ReadFrame allocated %d bytes for a frame that sent 102 of %d bytes", allocated, length)
	}

	// The same announced size, fully sent, decodes: growth reaches the
	// exact size and the body is intact.
	body := bytes.Repeat([]byte("0123456789abcdef"), (int(length)-4-2)/16)
	body = append(body, make([]byte, int(length)-4-2-len(body))...)
	full := rawFrame(0, []byte("{}"), body)
	if len(full) != DefaultMaxFrameBytes {
		t.Fatalf("test frame is %d bytes", len(full))
	}
	cmd, err := ReadFrame(bytes.NewReader(full), 0)
	if err != nil {
		t.Fatalf("ReadFrame of a full-size frame: %v", err)
	}
	if !bytes.Equal(cmd.Body, body) || cap(cmd.Body) != len(body) {
		t.Errorf("full-size frame: body of %d bytes (cap %d), want %d", len(cmd.Body), cap(cmd.Body), len(body))
	}
}

func TestMalformedJSONHeaders(t *testing.T) {
	bad := []string{
		`null`, `[]`, `"x"`, `123`, `true`, `{"code":}`, `{"code":105`, `{} x`, `{}{}`,
		`{"code":"105"}`, `{"code":1.5}`, `{"code":1e2}`, `{"code":2147483648}`, `{"code":-2147483649}`,
		`{"opaque":"1"}`, `{"flag":true}`, `{"version":32768}`, `{"version":-32769}`,
		`{"remark":1}`, `{"remark":{}}`,
		`{"extFields":[]}`, `{"extFields":"a"}`, `{"extFields":{"queueOffset":0}}`, `{"extFields":{"a":true}}`,
		`{"extFields":{"a":{}}}`,
		`{"language":true}`, `{"language":{}}`, `{"language":256}`, `{"language":-1}`, `{"language":9.0}`,
		"{\"remark\":\"\x01\"}",                           // raw control character in a string
		`{"code":105,}`, `{'code':105}`, "\xef\xbb\xbf{}", // trailing comma, single quotes, BOM
		`{"a":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, // nesting deeper than encoding/json allows
	}
	for _, h := range bad {
		if _, _, err := DecodeFrame(rawFrame(0, []byte(h), nil), 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("header %.60q: %v, want ErrMalformed", h, err)
		}
	}
}

func TestTolerantJSONHeaders(t *testing.T) {
	cases := []struct {
		header string
		want   RemotingCommand
	}{
		{`{}`, RemotingCommand{}},
		{" \t\r\n{ \"code\" : 105 , \"flag\":0 }\n ", RemotingCommand{Code: 105}},
		{`{"code":200050,"language":"JAVA"}`, RemotingCommand{Code: int32(PopMessage), Language: LanguageJava}},
		{`{"code":-1006,"flag":-1,"opaque":-2147483648,"version":-1}`,
			RemotingCommand{Code: int32(RPCTimeOut), Flag: -1, Opaque: -2147483648, Version: -1}},
		{`{"language":9}`, RemotingCommand{Language: LanguageGo}},
		{`{"language":13}`, RemotingCommand{Language: LanguageNodeJS}},
		{`{"language":200}`, RemotingCommand{Language: "200"}},
		{`{"language":null,"remark":null,"extFields":null}`, RemotingCommand{}},
		{`{"language":"KLINGON"}`, RemotingCommand{Language: "KLINGON"}},
		{`{"extFields":{"a":null,"b":"","c":"\u0001\"\\\/é"}}`,
			RemotingCommand{ExtFields: map[string]string{"b": "", "c": "\x01\"\\/é"}}},
		{"{\"remark\":\"bad \xff utf8\"}", RemotingCommand{Remark: "bad \uFFFD utf8"}},
		{`{"code":1,"code":2}`, RemotingCommand{Code: 2}},
		{`{"serializeTypeCurrentRPC":"JSON","suspended":false,"x":{"y":[1,2,{"z":null}]}}`, RemotingCommand{}},
	}
	for _, c := range cases {
		got, _, err := DecodeFrame(rawFrame(0, []byte(c.header), nil), 0)
		if err != nil {
			t.Errorf("header %q: %v", c.header, err)
			continue
		}
		want := c.want
		if want.ExtFields == nil {
			want.ExtFields = map[string]string{}
		}
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("header %q:\n got %v\nwant %v", c.header, got, &want)
		}
	}
}

// binHeader builds a binary header: the fixed part with the given remark
// length field, then raw remark bytes, the ext length field and raw ext bytes.
func binHeader(remarkLen int32, remark []byte, extLen int32, ext []byte) []byte {
	h := []byte{0x00, 0x0a, 0x00, 0x01, 0xdf, 0, 0, 0, 1, 0, 0, 0, 0}
	h = binary.BigEndian.AppendUint32(h, uint32(remarkLen))
	h = append(h, remark...)
	h = binary.BigEndian.AppendUint32(h, uint32(extLen))
	return append(h, ext...)
}

func extEntry(keyLen int16, key string, valLen int32, val string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(keyLen))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, uint32(valLen))
	return append(b, val...)
}

func TestMalformedBinaryHeaders(t *testing.T) {
	good := extEntry(1, "k", 1, "v")
	cases := []struct {
		name   string
		header []byte
	}{
		{"remark length negative", binHeader(-1, nil, 0, nil)},
		{"remark length past the header", binHeader(5, []byte("abcd"), 0, nil)},
		{"remark length eats the ext length", binHeader(6, []byte("ab"), 0, nil)[:21+2]},
		{"ext length negative", binHeader(0, nil, -1, nil)},
		{"ext length short of the header", binHeader(0, nil, int32(len(good)-1), good)},
		{"ext length past the header", binHeader(0, nil, int32(len(good)+1), good)},
		{"trailing bytes after ext", append(binHeader(0, nil, 0, nil), 0)},
		{"key length negative", binHeader(0, nil, 7, extEntry(-1, "k", 0, ""))},
		{"key length past ext", binHeader(0, nil, 7, extEntry(2, "k", 0, "")[:7])},
		{"no room for value length", binHeader(0, nil, 5, extEntry(1, "k", 0, "")[:5])},
		{"value length negative", binHeader(0, nil, 8, extEntry(1, "k", -1, "v"))},
		{"value length past ext", binHeader(0, nil, 8, extEntry(1, "k", 2, "v"))},
		{"one byte of a key length", binHeader(0, nil, int32(len(good)+1), append(good, 0))},
	}
	for _, c := range cases {
		if _, _, err := DecodeFrame(rawFrame(1, c.header, nil), 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", c.name, err)
		}
	}
}

func TestTolerantBinaryHeaders(t *testing.T) {
	ext := cat(extEntry(1, "k", 1, "a"), extEntry(0, "", 0, ""), extEntry(1, "k", 1, "b"))
	h := binHeader(3, []byte("r\xffr"), int32(len(ext)), ext)
	h[2] = 200 // a language byte with no name
	got, _, err := DecodeFrame(rawFrame(1, h, []byte("body")), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &RemotingCommand{
		Code: int32(SendMessage), Language: "200", Version: VersionV5_3_3, Opaque: 1,
		Remark: "r\xffr", ExtFields: map[string]string{"k": "b", "": ""}, Body: []byte("body"), SerializeType: RocketMQ,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("\n got %v\nwant %v", got, want)
	}
	// The unnamed language byte and the raw remark bytes survive re-encoding.
	enc, err := AppendFrame(nil, got)
	if err != nil {
		t.Fatal(err)
	}
	if enc[prefixBytes+2] != 200 {
		t.Errorf("language byte re-encoded as %d", enc[prefixBytes+2])
	}
	if again, _, err := DecodeFrame(enc, 0); err != nil || !reflect.DeepEqual(again, want) {
		t.Errorf("re-decoded %v, %v", again, err)
	}
}

func TestAppendFrameErrors(t *testing.T) {
	base := func(mod func(c *RemotingCommand)) *RemotingCommand {
		c := &RemotingCommand{Code: 10, Language: LanguageGo, SerializeType: RocketMQ}
		mod(c)
		return c
	}
	cases := []struct {
		name string
		cmd  *RemotingCommand
		want error
	}{
		{"nil", nil, ErrInvalidCommand},
		{"serialize type 2", base(func(c *RemotingCommand) { c.SerializeType = 2 }), ErrInvalidCommand},
		{"binary code over int16", base(func(c *RemotingCommand) { c.Code = int32(PopMessage) }), ErrInvalidCommand},
		{"binary code under int16", base(func(c *RemotingCommand) { c.Code = -32769 }), ErrInvalidCommand},
		{"binary empty language", base(func(c *RemotingCommand) { c.Language = "" }), ErrInvalidCommand},
		{"binary unknown language", base(func(c *RemotingCommand) { c.Language = "KLINGON" }), ErrInvalidCommand},
		{"binary language 256", base(func(c *RemotingCommand) { c.Language = "256" }), ErrInvalidCommand},
		{"binary language 09", base(func(c *RemotingCommand) { c.Language = "09" }), ErrInvalidCommand},
		{"binary key over int16", base(func(c *RemotingCommand) {
			c.ExtFields = map[string]string{strings.Repeat("k", 32768): "v"}
		}), ErrInvalidCommand},
		{"binary header over 16 MiB", base(func(c *RemotingCommand) { c.Remark = strings.Repeat("r", MaxHeaderBytes) }), ErrFrameTooLarge},
		{"JSON header over 16 MiB", base(func(c *RemotingCommand) {
			c.SerializeType = JSON
			c.ExtFields = map[string]string{"k": strings.Repeat("\x01", MaxHeaderBytes/6)}
		}), ErrFrameTooLarge},
	}
	dst := []byte("keep")
	for _, c := range cases {
		out, err := AppendFrame(dst, c.cmd)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if string(out) != "keep" {
			t.Errorf("%s: dst changed to %d bytes", c.name, len(out))
		}
	}

	// JSON has no such limits: a POP code and any language string go out.
	ok := &RemotingCommand{Code: int32(PopMessage), Language: "KLINGON", SerializeType: JSON}
	if _, err := AppendFrame(nil, ok); err != nil {
		t.Errorf("JSON POP code: %v", err)
	}
	// A binary key of exactly 32767 bytes is fine.
	ok = base(func(c *RemotingCommand) { c.ExtFields = map[string]string{strings.Repeat("k", 32767): "v"} })
	enc, err := AppendFrame(nil, ok)
	if err != nil {
		t.Fatalf("32767-byte key: %v", err)
	}
	if got, _, err := DecodeFrame(enc, 0); err != nil || !reflect.DeepEqual(got.ExtFields, ok.ExtFields) {
		t.Errorf("32767-byte key did not round-trip: %v", err)
	}
}

// TestStream: frames appended one after another come back in order from
// one stream and from one buffer, then io.EOF.
func TestStream(t *testing.T) {
	var stream []byte
	var want []*RemotingCommand
	for _, fx := range Fixtures() {
		var err error
		stream, err = AppendFrame(stream, &fx.Command)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, &fx.Command)
	}
	r := bytes.NewReader(stream)
	rest := stream
	for i, w := range want {
		got, err := ReadFrame(r, 0)
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Fatalf("frame %d from the stream: %v, %v", i, got, err)
		}
		got, n, err := DecodeFrame(rest, 0)
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Fatalf("frame %d from the buffer: %v, %v", i, got, err)
		}
		rest = rest[n:]
	}
	if _, err := ReadFrame(r, 0); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	if len(rest) != 0 {
		t.Errorf("%d bytes left in the buffer", len(rest))
	}
}

// TestBodyAliasing: Body aliases the input, but an append to it cannot
// overwrite the next frame.
func TestBodyAliasing(t *testing.T) {
	one := &RemotingCommand{Code: 10, Language: LanguageGo, ExtFields: map[string]string{}, Body: []byte("abc")}
	two := &RemotingCommand{Code: 11, Language: LanguageGo, ExtFields: map[string]string{}, Body: []byte("xyz")}
	buf, _ := AppendFrame(nil, one)
	buf, _ = AppendFrame(buf, two)
	got, n, err := DecodeFrame(buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got.Body, "!!!!!!!!"...)
	if next, _, err := DecodeFrame(buf[n:], 0); err != nil || !reflect.DeepEqual(next, two) {
		t.Errorf("second frame after appending to the first body: %v, %v", next, err)
	}
}

func TestNewResponse(t *testing.T) {
	for _, fx := range Fixtures() {
		req := fx.Command
		if req.IsResponse() {
			continue
		}
		resp := NewResponse(&req, TopicNotExist, "no route")
		if resp.Opaque != req.Opaque || !resp.IsResponse() || resp.IsOneway() ||
			resp.SerializeType != req.SerializeType || resp.Code != int32(TopicNotExist) ||
			resp.Remark != "no route" || resp.Language != LanguageJava {
			t.Errorf("%s: NewResponse = %v", fx.Name, resp)
		}
		enc, err := AppendFrame(nil, resp)
		if err != nil {
			t.Fatalf("%s: %v", fx.Name, err)
		}
		if SerializeType(enc[4]) != req.SerializeType {
			t.Errorf("%s: reply went out as %v, request came as %v", fx.Name, SerializeType(enc[4]), req.SerializeType)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		flag             int32
		response, oneway bool
	}{{0, false, false}, {1, true, false}, {2, false, true}, {3, true, true}, {-4, false, false}} {
		cmd := &RemotingCommand{Flag: c.flag}
		if cmd.IsResponse() != c.response || cmd.IsOneway() != c.oneway {
			t.Errorf("flag %d: IsResponse %v IsOneway %v", c.flag, cmd.IsResponse(), cmd.IsOneway())
		}
	}
}

func TestLanguageCodes(t *testing.T) {
	for i := range 256 {
		l := LanguageOf(byte(i))
		b, ok := l.Byte()
		if !ok || b != byte(i) {
			t.Errorf("byte %d -> %q -> %d, %v", i, l, b, ok)
		}
	}
	for name, code := range map[LanguageCode]byte{LanguageJava: 0, LanguageGo: 9, LanguageNodeJS: 13, LanguageOther: 7} {
		if b, ok := name.Byte(); !ok || b != code {
			t.Errorf("%s.Byte() = %d, %v; want %d", name, b, ok, code)
		}
	}
	for _, bad := range []LanguageCode{"", "go", "KLINGON", "256", "-1", "09", "+9", " 9"} {
		if b, ok := bad.Byte(); ok {
			t.Errorf("%q.Byte() = %d, want no byte", bad, b)
		}
	}
}

func TestSerializeTypeString(t *testing.T) {
	if JSON.String() != "JSON" || RocketMQ.String() != "ROCKETMQ" || SerializeType(7).String() != "SerializeType(7)" {
		t.Error(JSON, RocketMQ, SerializeType(7))
	}
}

func TestCommandString(t *testing.T) {
	fx := fixture(t, "json/request/SEND_MESSAGE_V2")
	s := fx.Command.String()
	for _, want := range []string{"SEND_MESSAGE_V2(310)", "opaque=42", `b="TopicTest"`, "body=14B", "JSON", "JAVA"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %s; missing %s", s, want)
		}
	}
	if strings.Contains(s, "Hello") {
		t.Errorf("String() shows the body: %s", s)
	}
	signed := &RemotingCommand{Code: int32(SendMessage), ExtFields: map[string]string{
		"AccessKey": "alice", "Signature": "c2VjcmV0LWRlcml2ZWQ=", "SecurityToken": "tok3n", "topic": "T"}}
	s = signed.String()
	if strings.Contains(s, "c2VjcmV0LWRlcml2ZWQ=") || strings.Contains(s, "tok3n") ||
		!strings.Contains(s, `AccessKey="alice"`) || !strings.Contains(s, "Signature=(redacted)") {
		t.Errorf("String() of a signed request: %s", s)
	}
}

// fixture returns the golden frame with the given name.
func fixture(t *testing.T, name string) Fixture {
	t.Helper()
	for _, fx := range Fixtures() {
		if fx.Name == name {
			return fx
		}
	}
	t.Fatalf("no fixture %q", name)
	return Fixture{}
}
