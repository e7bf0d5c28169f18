package amqp

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// raw is a hand-driven client connection, for input no real client sends.
type raw struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t *testing.T, n *node) *raw {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(n.url, "amqp://guest:guest@"), "/")
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &raw{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *raw) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *raw) method(ch uint16, m frame.Method) { c.write(frame.AppendMethodFrame(nil, ch, m)) }

// expect reads frames until a method of m's type arrives.
func (c *raw) expect(want frame.Method) frame.Method {
	c.t.Helper()
	for {
		f, err := frame.ReadFrame(c.r, 1<<20)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", want.Name(), err)
		}
		if f.Type != frame.TypeMethod {
			continue
		}
		m, err := frame.DecodeMethod(f.Payload)
		if err != nil {
			c.t.Fatal(err)
		}
		if m.Name() == want.Name() {
			return m
		}
	}
}

// open does the handshake and opens channel 1.
func (c *raw) open() {
	c.t.Helper()
	c.handshake(nil)
	c.method(1, &frame.ChannelOpen{})
	c.expect(&frame.ChannelOpenOk{})
}

// handshake connects with the client properties given, up to open-ok.
func (c *raw) handshake(props frame.Table) {
	c.t.Helper()
	c.write(frame.ProtocolHeader[:])
	c.expect(&frame.ConnectionStart{})
	c.method(0, &frame.ConnectionStartOk{ClientProperties: props, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	c.expect(&frame.ConnectionTune{})
	c.method(0, &frame.ConnectionTuneOk{ChannelMax: 10, FrameMax: 131072})
	c.method(0, &frame.ConnectionOpen{VirtualHost: "/"})
	c.expect(&frame.ConnectionOpenOk{})
}

// closedWith expects connection.close with code, then the socket to end
// after our close-ok.
func (c *raw) closedWith(code uint16) {
	c.t.Helper()
	m := c.expect(&frame.ConnectionClose{}).(*frame.ConnectionClose)
	if m.ReplyCode != code {
		c.t.Fatalf("connection.close %d %q, want %d", m.ReplyCode, m.ReplyText, code)
	}
	c.method(0, &frame.ConnectionCloseOk{})
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		c.t.Fatalf("socket after close-ok: %v", err)
	}
}

// TestBadInput: malformed and out-of-order input gets AMQP's own errors
// (our protocol header, connection.close with 501, 502, 503, 504, 505),
// and the broker, another client and the stored messages are unaffected.
func TestBadInput(t *testing.T) {
	n := startNode(t, nil)
	good := openCh(t, dial(t, n.url))
	if _, err := good.QueueDeclare("keep", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := good.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := good.PublishWithDeferredConfirmWithContext(ctx(t), "", "keep", false, false, amqp091.Publishing{Body: []byte("stored")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx(t)); !ok || err != nil {
		t.Fatalf("confirm: %v", err)
	}

	t.Run("other protocol", func(t *testing.T) {
		c := dialRaw(t, n)
		c.write([]byte("GET / HTTP/1.1\r\n\r\n"))
		got, err := io.ReadAll(c.r)
		if err != nil || !bytes.Equal(got, frame.ProtocolHeader[:]) {
			t.Fatalf("answer to HTTP: %q, %v", got, err)
		}
	})
	t.Run("bad frame end", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		f := frame.AppendMethodFrame(nil, 1, &frame.BasicQos{PrefetchCount: 1})
		f[len(f)-1] = 0x00
		c.write(f)
		c.closedWith(codeFrameError)
	})
	t.Run("frame over frame_max", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.write([]byte{frame.TypeBody, 0, 1, 0x7f, 0xff, 0xff, 0xff}) // claims 2 GiB
		c.closedWith(codeFrameError)
	})
	t.Run("truncated arguments", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.write(frame.AppendFrame(nil, frame.TypeMethod, 1, []byte{0, 50, 0, 10, 0})) // queue.declare, cut short
		c.closedWith(codeSyntaxError)
	})
	t.Run("unknown method", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.write(frame.AppendFrame(nil, frame.TypeMethod, 1, []byte{0, 99, 0, 1}))
		c.closedWith(codeNotImplemented)
	})
	t.Run("channel not open", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.method(7, &frame.BasicQos{PrefetchCount: 1})
		c.closedWith(codeChannelError)
	})
	t.Run("body without publish", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.write(frame.AppendFrame(nil, frame.TypeBody, 1, []byte("stray")))
		c.closedWith(codeUnexpectedFrame)
	})
	t.Run("method inside content", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.method(1, &frame.BasicPublish{RoutingKey: "keep"})
		c.method(1, &frame.BasicQos{PrefetchCount: 1})
		c.closedWith(codeUnexpectedFrame)
	})
	t.Run("body longer than header", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.method(1, &frame.BasicPublish{RoutingKey: "keep"})
		c.write(frame.AppendHeaderFrame(nil, 1, 60, 3, []byte{0, 0}))
		c.write(frame.AppendFrame(nil, frame.TypeBody, 1, []byte("too long")))
		c.closedWith(codeFrameError)
	})
	t.Run("heartbeat on a channel", func(t *testing.T) {
		c := dialRaw(t, n)
		c.open()
		c.write(frame.AppendFrame(nil, frame.TypeHeartbeat, 1, nil))
		c.closedWith(codeFrameError)
	})
	t.Run("handshake out of order", func(t *testing.T) {
		c := dialRaw(t, n)
		c.write(frame.ProtocolHeader[:])
		c.expect(&frame.ConnectionStart{})
		c.method(0, &frame.ConnectionOpen{VirtualHost: "/"})
		c.closedWith(codeCommandInvalid)
	})

	// The other client and the stored message are fine.
	d, ok, err := good.Get("keep", true)
	if err != nil || !ok || string(d.Body) != "stored" {
		t.Fatalf("after the bad input: ok %v err %v body %q", ok, err, d.Body)
	}
}

// TestHandedOnConnection: a connection another door hands on starts with
// proxyMarker; the door takes the client's protocol header after it and
// serves the connection as any other.
func TestHandedOnConnection(t *testing.T) {
	n := startNode(t, nil)
	c := dialRaw(t, n)
	c.write(proxyMarker[:])
	c.open() // protocol header, handshake, channel 1
	c.method(1, &frame.QueueDeclare{Queue: "handed-on"})
	if ok := c.expect(&frame.QueueDeclareOk{}).(*frame.QueueDeclareOk); ok.Queue != "handed-on" {
		t.Fatalf("declare-ok %+v", ok)
	}
}
