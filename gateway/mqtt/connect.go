package mqtt

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"
)

// connectTimeout bounds the wait for a new connection's CONNECT (and, on
// TLS listeners, for the TLS handshake before it), so that connections
// that never log in do not pile up. mochi sets the keepalive deadline
// once the CONNECT is in.
const connectTimeout = 10 * time.Second

// connectConn hands mochi a client's byte stream with one change to its
// first packet, the CONNECT: a password that is present but empty is
// taken out (its field and its flag). MQTT allows an empty password, but
// mochi refuses it as a protocol error, which a 3.1.1 client gets as a
// CONNACK code (0x82) its version does not have. Without the field the
// login is checked as the user name with an empty password, like any
// other, and refused with the usual code.
//
// Only the first Read does anything; later ones go straight to the
// connection, so a connection keeps no buffer for this.
type connectConn struct {
	net.Conn
	maxBytes int // the largest packet mochi accepts: a bigger CONNECT is passed on untouched
	started  bool
	ahead    []byte // bytes read ahead, handed out before reading the connection again
	err      error  // the error that ended the read ahead, returned once ahead is drained
}

func newConnectConn(c net.Conn, maxBytes int) *connectConn {
	return &connectConn{Conn: c, maxBytes: maxBytes}
}

// Read is called by the connection's read goroutine only.
func (c *connectConn) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		_ = c.Conn.SetReadDeadline(time.Now().Add(connectTimeout))
		c.ahead, c.err = c.readConnect()
	}
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		if len(c.ahead) == 0 {
			c.ahead = nil
		}
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// readConnect reads the first packet and returns its bytes, rewritten if
// need be. Anything that is not a well-formed CONNECT within maxBytes is
// returned as far as it was read, for mochi to refuse.
func (c *connectConn) readConnect() ([]byte, error) {
	head := make([]byte, 1, 5)
	if _, err := io.ReadFull(c.Conn, head); err != nil {
		return nil, err
	}
	if head[0] != 0x10 {
		return head, nil
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		var b [1]byte
		if _, err := io.ReadFull(c.Conn, b[:]); err != nil {
			return head, err
		}
		head = append(head, b[0])
		n += int(b[0]&0x7f) * mul
		if b[0]&0x80 == 0 {
			break
		}
		if i == 3 {
			return head, nil // a malformed length
		}
		mul *= 128
	}
	if n+len(head) > c.maxBytes {
		return head, nil
	}
	body := make([]byte, n)
	if k, err := io.ReadFull(c.Conn, body); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF // what the connection said, after the bytes passed on
		}
		return append(head, body[:k]...), err
	}
	flagsAt, pwAt, ok := emptyPassword(body)
	if !ok {
		return append(head, body...), nil
	}
	body = append(body[:pwAt], body[pwAt+2:]...)
	body[flagsAt] &^= 0x40
	return append(append([]byte{0x10}, remainingLength(len(body))...), body...), nil
}

// emptyPassword parses a CONNECT's body (MQTT 3.1, 3.1.1 and 5) and,
// if its password flag is set and its password empty, returns where its
// flags byte and its password field are. The password is the last field.
func emptyPassword(b []byte) (flagsAt, pwAt int, ok bool) {
	r := cursor{b: b}
	r.skipString() // protocol name
	version := r.readByte()
	flagsAt = r.off
	flags := r.readByte()
	r.skip(2) // keepalive
	if r.bad || flags&0x40 == 0 {
		return 0, 0, false
	}
	if version == 5 {
		r.skip(r.varint()) // properties
	}
	r.skipString() // client id
	if flags&0x04 != 0 {
		if version == 5 {
			r.skip(r.varint()) // will properties
		}
		r.skipString() // will topic
		r.skipString() // will payload
	}
	if flags&0x80 != 0 {
		r.skipString() // user name
	}
	pwAt = r.off
	if r.bad || pwAt+2 > len(b) || b[pwAt] != 0 || b[pwAt+1] != 0 {
		return 0, 0, false
	}
	return flagsAt, pwAt, true
}

// cursor reads a packet body; a read past its end sets bad.
type cursor struct {
	b   []byte
	off int
	bad bool
}

func (r *cursor) skip(n int) {
	if n < 0 || r.off+n > len(r.b) {
		r.bad, r.off = true, len(r.b)
		return
	}
	r.off += n
}

func (r *cursor) readByte() byte {
	if r.off >= len(r.b) {
		r.bad = true
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *cursor) skipString() {
	if r.off+2 > len(r.b) {
		r.bad = true
		return
	}
	n := int(binary.BigEndian.Uint16(r.b[r.off:]))
	r.off += 2
	r.skip(n)
}

func (r *cursor) varint() int {
	n, mul := 0, 1
	for range 4 {
		b := r.readByte()
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			return n
		}
		mul *= 128
	}
	r.bad = true
	return 0
}

// remainingLength encodes a packet's remaining length.
func remainingLength(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}
