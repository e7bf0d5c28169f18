package frame

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// h decodes hex digits; spaces are ignored.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// a is ASCII text as bytes.
func a(s string) []byte { return []byte(s) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// goldenMethod is a method frame worked out by hand from the specification.
type goldenMethod struct {
	name    string
	channel uint16
	raw     []byte // the whole frame
	method  Method
}

func goldenMethods() []goldenMethod {
	return []goldenMethod{
		{
			name: "connection.start", channel: 0,
			raw: cat(
				h("01 0000 00000030"), // method frame, channel 0, size 48
				h("000a 000a"),        // class 10 connection, method 10 start
				h("00"),               // version-major 0
				h("09"),               // version-minor 9
				h("00000014"),         // server-properties: 20 bytes of entries
				h("07"), a("product"), // key
				h("53 00000007"), a("conflux"), // 'S', longstr of 7
				h("00000005"), a("PLAIN"), // mechanisms
				h("00000005"), a("en_US"), // locales
				h("ce"),
			),
			method: &ConnectionStart{
				VersionMajor: 0, VersionMinor: 9,
				ServerProperties: Table{"product": "conflux"},
				Mechanisms:       "PLAIN", Locales: "en_US",
			},
		},
		{
			name: "connection.tune", channel: 0,
			raw: cat(
				h("01 0000 0000000c"), // method frame, channel 0, size 12
				h("000a 001e"),        // class 10, method 30 tune
				h("07ff"),             // channel-max 2047
				h("00020000"),         // frame-max 131072
				h("003c"),             // heartbeat 60
				h("ce"),
			),
			method: &ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
		},
		{
			name: "queue.declare", channel: 1,
			raw: cat(
				h("01 0001 00000038"), // method frame, channel 1, size 56
				h("0032 000a"),        // class 50 queue, method 10 declare
				h("0000"),             // reserved-1 (ticket)
				h("02"), a("q1"),      // queue
				// bits: passive 0, durable 1, exclusive 0, auto-delete 1, no-wait 1
				h("1a"),
				h("0000002a"),              // arguments: 42 bytes of entries, keys sorted
				h("0c"), a("x-max-length"), // key
				h("49 000003e8"),           // 'I' int32 1000
				h("0c"), a("x-queue-type"), // key
				h("53 00000006"), a("quorum"), // 'S' longstr
				h("ce"),
			),
			method: &QueueDeclare{
				Queue: "q1", Durable: true, AutoDelete: true, NoWait: true,
				Arguments: Table{"x-max-length": int32(1000), "x-queue-type": "quorum"},
			},
		},
		{
			name: "basic.publish", channel: 1,
			raw: cat(
				h("01 0001 0000000d"), // method frame, channel 1, size 13
				h("003c 0028"),        // class 60 basic, method 40 publish
				h("0000"),             // reserved-1
				h("02"), a("ex"),      // exchange
				h("02"), a("rk"), // routing-key
				h("01"), // mandatory (bit 0), immediate clear (bit 1)
				h("ce"),
			),
			method: &BasicPublish{Exchange: "ex", RoutingKey: "rk", Mandatory: true},
		},
		{
			name: "basic.deliver", channel: 2,
			raw: cat(
				h("01 0002 00000016"), // method frame, channel 2, size 22
				h("003c 003c"),        // class 60, method 60 deliver
				h("04"), a("ctag"),    // consumer-tag
				h("0000000000000001"), // delivery-tag 1
				h("01"),               // redelivered
				h("00"),               // exchange "" (default)
				h("02"), a("rk"),      // routing-key
				h("ce"),
			),
			method: &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 1, Redelivered: true, RoutingKey: "rk"},
		},
		{
			name: "basic.ack multiple", channel: 1,
			raw: cat(
				h("01 0001 0000000d"), // method frame, channel 1, size 13
				h("003c 0050"),        // class 60, method 80 ack
				h("0000000000000005"), // delivery-tag 5
				h("01"),               // multiple
				h("ce"),
			),
			method: &BasicAck{DeliveryTag: 5, Multiple: true},
		},
		{
			name: "connection.close", channel: 0,
			raw: cat(
				h("01 0000 00000019"),        // method frame, channel 0, size 25
				h("000a 0032"),               // class 10, method 50 close
				h("0193"),                    // reply-code 403
				h("0e"), a("ACCESS_REFUSED"), // reply-text
				h("0000 0000"), // class-id, method-id: none
				h("ce"),
			),
			method: &ConnectionClose{ReplyCode: 403, ReplyText: "ACCESS_REFUSED"},
		},
		{
			name: "confirm.select", channel: 3,
			raw: cat(
				h("01 0003 00000005"), // method frame, channel 3, size 5
				h("0055 000a"),        // class 85 confirm, method 10 select
				h("00"),               // nowait clear
				h("ce"),
			),
			method: &ConfirmSelect{},
		},
	}
}

func TestGoldenMethods(t *testing.T) {
	for _, g := range goldenMethods() {
		t.Run(g.name, func(t *testing.T) {
			r := bytes.NewReader(g.raw)
			f, err := ReadFrame(r, 1<<20)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if f.Type != TypeMethod || f.Channel != g.channel {
				t.Fatalf("frame type %d channel %d, want %d %d", f.Type, f.Channel, TypeMethod, g.channel)
			}
			if _, err := ReadFrame(r, 1<<20); err != io.EOF {
				t.Fatalf("ReadFrame after the frame: %v, want io.EOF", err)
			}
			m, err := DecodeMethod(f.Payload)
			if err != nil {
				t.Fatalf("DecodeMethod: %v", err)
			}
			if !reflect.DeepEqual(m, g.method) {
				t.Fatalf("decoded\n %#v\nwant\n %#v", m, g.method)
			}
			if got := AppendMethodFrame(nil, g.channel, g.method); !bytes.Equal(got, g.raw) {
				t.Fatalf("AppendMethodFrame\n got % x\nwant % x", got, g.raw)
			}
			if got := AppendMethod(nil, g.method); !bytes.Equal(got, g.raw[7:len(g.raw)-1]) {
				t.Fatalf("AppendMethod\n got % x\nwant % x", got, g.raw[7:len(g.raw)-1])
			}
			if got := AppendFrame([]byte("x"), TypeMethod, g.channel, AppendMethod(nil, g.method)); !bytes.Equal(got[1:], g.raw) || got[0] != 'x' {
				t.Fatalf("AppendFrame\n got % x\nwant % x", got, g.raw)
			}
			if err := ValidateMethod(g.method); err != nil {
				t.Fatalf("ValidateMethod: %v", err)
			}
		})
	}
}

// goldenHeader is a content header with several properties.
var goldenHeader = cat(
	h("02 0001 0000002e"),    // header frame, channel 1, size 46
	h("003c"),                // class 60
	h("0000"),                // weight
	h("0000000000000005"),    // body-size 5
	h("b0c0"),                // flags: content-type, headers, delivery-mode, message-id, timestamp
	h("0a"), a("text/plain"), // content-type
	h("00000005"),                 // headers: 5 bytes of entries
	h("01"), a("n"), h("73 fffe"), // "n": 's' int16 -2
	h("02"),          // delivery-mode 2 (persistent)
	h("02"), a("m1"), // message-id
	h("0000000065 53f100"), // timestamp 1700000000
	h("ce"),
)

var goldenProps = Properties{
	ContentType:  "text/plain",
	Headers:      Table{"n": int16(-2)},
	DeliveryMode: 2,
	MessageID:    "m1",
	Timestamp:    time.Unix(1700000000, 0).UTC(),
	Flags:        FlagContentType | FlagHeaders | FlagDeliveryMode | FlagMessageID | FlagTimestamp,
}

func TestGoldenHeader(t *testing.T) {
	f, err := ReadFrame(bytes.NewReader(goldenHeader), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeHeader || f.Channel != 1 {
		t.Fatalf("frame %+v", f)
	}
	class, size, props, err := ParseHeader(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if class != 60 || size != 5 || !bytes.Equal(props, f.Payload[12:]) {
		t.Fatalf("ParseHeader = %d, %d, % x", class, size, props)
	}
	p, err := DecodeProperties(props)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, goldenProps) {
		t.Fatalf("DecodeProperties\n %#v\nwant\n %#v", p, goldenProps)
	}
	enc, err := AppendProperties(nil, &goldenProps)
	if err != nil || !bytes.Equal(enc, props) {
		t.Fatalf("AppendProperties = % x, %v\nwant % x", enc, err, props)
	}
	if got := AppendHeaderFrame(nil, 1, 60, 5, props); !bytes.Equal(got, goldenHeader) {
		t.Fatalf("AppendHeaderFrame\n got % x\nwant % x", got, goldenHeader)
	}
	if got := AppendHeader(nil, 60, 5, props); !bytes.Equal(got, f.Payload) {
		t.Fatalf("AppendHeader\n got % x\nwant % x", got, f.Payload)
	}

	// Trailing bytes after the property list are dropped from props.
	_, _, props2, err := ParseHeader(append(bytes.Clone(f.Payload), 1, 2, 3))
	if err != nil || !bytes.Equal(props2, props) {
		t.Fatalf("ParseHeader with trailing bytes: % x, %v", props2, err)
	}
}

var goldenHeartbeat = h("08 0000 00000000 ce") // heartbeat, channel 0, size 0, end

func TestGoldenHeartbeat(t *testing.T) {
	f, err := ReadFrame(bytes.NewReader(goldenHeartbeat), 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeHeartbeat || f.Channel != 0 || len(f.Payload) != 0 {
		t.Fatalf("frame %+v", f)
	}
	if got := AppendFrame(nil, TypeHeartbeat, 0, nil); !bytes.Equal(got, goldenHeartbeat) {
		t.Fatalf("AppendFrame = % x", got)
	}
}

func TestProtocolHeader(t *testing.T) {
	if !bytes.Equal(ProtocolHeader[:], h("414d5150 00000901")) {
		t.Fatalf("% x", ProtocolHeader)
	}
}

// goldenTable covers every tag, by hand.
var goldenTable = cat(
	h("00000081"),                     // 129 bytes of entries; keys in sorted order
	h("01"), a("A"), h("41 00000011"), // array of 17 bytes:
	/**/ h("49 00000001"), // I 1
	/**/ h("46 00000007"), // F table of 7 bytes:
	/*    */ h("01"), a("k"), h("41 00000000"), // k: empty array
	h("01"), a("B"), h("42 ff"), // uint8 255
	h("01"), a("D"), h("44 02 fffffc18"), // Decimal scale 2, -1000
	h("01"), a("I"), h("49 80000000"), // int32 min
	h("01"), a("S"), h("53 00000002"), a("hi"), // string
	h("01"), a("T"), h("54 0000000065 53f100"), // timestamp 1700000000
	h("01"), a("V"), h("56"), // void
	h("01"), a("b"), h("62 80"), // int8 -128
	h("01"), a("d"), h("64 3ff8000000000000"), // float64 1.5
	h("01"), a("f"), h("66 40200000"), // float32 2.5
	h("01"), a("i"), h("69 ffffffff"), // uint32 max
	h("01"), a("l"), h("6c fffffffffffffffe"), // int64 -2
	h("01"), a("s"), h("73 8000"), // int16 min
	h("01"), a("t"), h("74 01"), // true
	h("01"), a("u"), h("75 ffff"), // uint16 max
	h("01"), a("x"), h("78 00000002 00ff"), // byte array
)

var goldenTableValue = Table{
	"A": []any{int32(1), Table{"k": []any(nil)}},
	"B": uint8(255),
	"D": Decimal{Scale: 2, Value: -1000},
	"I": int32(-1 << 31),
	"S": "hi",
	"T": time.Unix(1700000000, 0).UTC(),
	"V": nil,
	"b": int8(-128),
	"d": float64(1.5),
	"f": float32(2.5),
	"i": uint32(1<<32 - 1),
	"l": int64(-2),
	"s": int16(-1 << 15),
	"t": true,
	"u": uint16(1<<16 - 1),
	"x": []byte{0, 0xff},
}

func TestGoldenTable(t *testing.T) {
	tab, n, err := ReadTable(append(bytes.Clone(goldenTable), 0xAA))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(goldenTable) {
		t.Fatalf("consumed %d, want %d", n, len(goldenTable))
	}
	if !reflect.DeepEqual(tab, goldenTableValue) {
		t.Fatalf("ReadTable\n %#v\nwant\n %#v", tab, goldenTableValue)
	}
	enc, err := AppendTable(nil, goldenTableValue)
	if err != nil || !bytes.Equal(enc, goldenTable) {
		t.Fatalf("AppendTable = % x, %v\nwant % x", enc, err, goldenTable)
	}
}

func TestErrorsDistinct(t *testing.T) {
	errs := []error{ErrFrameEnd, ErrFrameTooLarge, ErrSyntax, ErrUnknownMethod}
	for i, e := range errs {
		for j, f := range errs {
			if (i == j) != errors.Is(e, f) {
				t.Fatalf("errors.Is(%v, %v) = %v", e, f, errors.Is(e, f))
			}
		}
	}
}
