package mqtt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// raw is a hand-driven MQTT 3.1.1 connection: bad input needs bytes no
// client library would send.
type raw struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, c: c, r: bufio.NewReader(c)}
}

func str16(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func frame(typeFlags byte, body []byte) []byte {
	return append(append([]byte{typeFlags}, remainingLength(len(body))...), body...)
}

func connectPacket(id string, clean bool) []byte {
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	body := append(str16("MQTT"), 4, flags, 0, 30)
	return frame(0x10, append(body, str16(id)...))
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet's first byte and body.
func (r *raw) read() (byte, []byte, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := r.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for range 4 {
		b, err := r.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r.r, body)
	return h, body, err
}

func (r *raw) connect(id string) {
	r.t.Helper()
	r.write(connectPacket(id, true))
	h, body, err := r.read()
	if err != nil || h != 0x20 || len(body) != 2 || body[1] != 0 {
		r.t.Fatalf("CONNACK: header %#x body %v err %v", h, body, err)
	}
}

// closed says whether the server closes the connection (reading EOF or a
// reset, possibly after a DISCONNECT) within the deadline.
func (r *raw) closed() bool {
	for {
		_, _, err := r.read()
		if err == nil {
			continue
		}
		var ne net.Error
		return !errors.As(err, &ne) || !ne.Timeout()
	}
}

// alive: a PINGREQ gets its PINGRESP.
func (r *raw) alive() bool {
	r.write([]byte{0xC0, 0})
	h, _, err := r.read()
	return err == nil && h == 0xD0
}

// TestBadInput: malformed and forbidden input over raw sockets gets a
// closed connection (3.1.1 has no reason codes for these) or is refused,
// and the server keeps serving everyone else.
func TestBadInput(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxPacketSizeBytes = 4096 })
	var in inbox
	wait(t, v3(t, n.addr, "bystander", true, nil).Subscribe("#", 1, in.handler), "subscribe")

	cases := []struct {
		name string
		send func(r *raw)
	}{
		{"second CONNECT", func(r *raw) { r.write(connectPacket("again", true)) }},
		{"packet over the size limit", func(r *raw) {
			body := append(str16("big/topic"), make([]byte, 5000)...)
			r.write(frame(0x30, body))
		}},
		{"remaining length over 4 bytes", func(r *raw) { r.write([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}) }},
		{"reserved packet type 0", func(r *raw) { r.write([]byte{0x00, 0x00}) }},
		{"PUBLISH with QoS 3", func(r *raw) { r.write(frame(0x36, append(str16("a/b"), 0, 1, 'x'))) }},
		{"SUBSCRIBE with wrong fixed-header flags", func(r *raw) { r.write(frame(0x80, append([]byte{0, 1}, append(str16("a/#"), 1)...))) }},
		{"PUBLISH to a topic with a wildcard", func(r *raw) { r.write(frame(0x30, append(str16("a/+/b"), 'x'))) }},
		{"PUBLISH with a truncated topic", func(r *raw) { r.write(frame(0x30, []byte{0x00, 0x20, 'a'})) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, n.addr)
			r.t = t
			r.connect("bad")
			tc.send(r)
			if !r.closed() {
				t.Fatal("connection not closed")
			}
		})
	}

	t.Run("CONNECT first packet missing", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		r.t = t
		r.write(frame(0x30, append(str16("a/b"), 'x')))
		if !r.closed() {
			t.Fatal("connection not closed")
		}
	})

	t.Run("publish to $SYS is dropped, the connection lives", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		r.t = t
		r.connect("sys")
		r.write(frame(0x30, append(str16("$SYS/broker/fake"), "x"...)))
		if !r.alive() {
			t.Fatal("connection not alive after a $SYS publish")
		}
		if _, ok := n.b.Topic(n.srv.cfg.FallbackTopic); ok {
			t.Fatal("a $SYS publish reached the log")
		}
	})

	// Everyone else is unaffected.
	pub := v3(t, n.addr, "good", true, nil)
	wait(t, pub.Publish("after/bad", 1, false, "still here"), "publish")
	waitFor(t, 10*time.Second, "the bystander's message", func() bool {
		for _, p := range in.payloads() {
			if p == "still here" {
				return true
			}
		}
		return false
	})
	for _, p := range in.payloads() {
		if p != "still here" {
			t.Fatalf("bystander got %q from bad input", p)
		}
	}
}

// TestLongNamesKeepTheBrokerUp: client ids, topics and filters key
// replicated records, and a key too long for the store would fail the
// apply on every replica. Over the limits they are refused at the door.
func TestLongNamesKeepTheBrokerUp(t *testing.T) {
	n := startNode(t, nil)
	long := strings.Repeat("x", 40000)

	t.Run("client id", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		r.write(connectPacket(long, true))
		h, body, err := r.read()
		if err != nil || h != 0x20 || len(body) != 2 || body[1] != 0x02 {
			t.Fatalf("want CONNACK 0x02 (identifier rejected), got %#x %v %v", h, body, err)
		}
	})
	t.Run("retained publish topic", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		r.connect("longtopic")
		r.write(frame(0x31, append(str16("a/"+long), 'x'))) // QoS 0, retain
		if !r.closed() {
			t.Fatal("connection not closed")
		}
	})
	t.Run("shared subscription filter", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		r.connect("longfilter")
		r.write(frame(0x82, append([]byte{0, 1}, append(str16("$share/g/"+long), 1)...)))
		h, body, err := r.read()
		if err != nil || h != 0x90 || len(body) != 3 || body[2] != 0x80 {
			t.Fatalf("want SUBACK 0x80, got %#x %v %v", h, body, err)
		}
	})
	t.Run("will topic", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		body := append(str16("MQTT"), 4, 0x02|0x04, 0, 30) // clean, will at QoS 0
		body = append(body, str16("longwill")...)
		body = append(body, str16(long)...)
		body = append(body, str16("bye")...)
		r.write(frame(0x10, body))
		if !r.closed() {
			t.Fatal("connection not closed")
		}
	})
	select {
	case <-n.b.Done():
		t.Fatalf("broker stopped: %v", n.b.Err())
	default:
	}
	var in inbox
	wait(t, v3(t, n.addr, "after", true, nil).Subscribe("ok/#", 1, in.handler), "subscribe")
	wait(t, v3(t, n.addr, "afterPub", true, nil).Publish("ok/1", 1, true, "fine"), "publish")
	in.waitN(t, 1, "a message after the long names")
}
