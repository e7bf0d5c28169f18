package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types, the frame end octet and sizes.
const (
	TypeMethod    uint8 = 1
	TypeHeader    uint8 = 2
	TypeBody      uint8 = 3
	TypeHeartbeat uint8 = 8

	FrameEnd byte = 0xCE

	// Overhead is the bytes a frame adds around its payload: a 7-byte
	// header (type, channel, size) and the end octet.
	Overhead = 8
	// MinFrameMax is the smallest frame-max a peer may negotiate (and the
	// limit in force until connection.tune-ok).
	MinFrameMax = 4096
)

// headerLen is the type, channel and size fields of a frame.
const headerLen = 7

// ProtocolHeader is what a client sends first, and what a server answers
// with before closing when it does not like the client's header.
var ProtocolHeader = [8]byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

// Sentinel errors. Errors returned by this package wrap one of them (or are
// io.EOF / io.ErrUnexpectedEOF / the reader's own error from ReadFrame).
var (
	// ErrFrameEnd: the octet after a frame's payload is not FrameEnd
	// (reply 501 frame-error).
	ErrFrameEnd = errors.New("frame: bad frame end octet")
	// ErrFrameTooLarge: a frame's size field exceeds the caller's limit
	// (reply 501 frame-error).
	ErrFrameTooLarge = errors.New("frame: frame too large")
	// ErrSyntax: a payload does not decode (reply 502 syntax-error).
	ErrSyntax = errors.New("frame: syntax error")
	// ErrUnknownMethod: a method frame names a class/method pair this
	// package does not know (reply 540 not-implemented or 503).
	ErrUnknownMethod = errors.New("frame: unknown method")
)

// Frame is one decoded frame. Payload is the bytes between the size field
// and the end octet.
type Frame struct {
	Type    uint8
	Channel uint16
	Payload []byte
}

// eagerAlloc is the largest payload buffer ReadFrame allocates up front;
// beyond it the buffer grows as bytes arrive, so a peer that announces a
// large frame and stalls costs memory in proportion to what it sent.
const eagerAlloc = 64 << 10

// ReadFrame reads one frame from r. A size field larger than maxPayload is
// ErrFrameTooLarge, reported before anything is allocated or read past the
// header; an end octet other than FrameEnd is ErrFrameEnd. The frame type
// and channel are not checked (heartbeats on a channel other than 0, or
// unknown types, are for the caller to judge). At the very start of a frame
// a clean end of input is io.EOF; a frame cut short is io.ErrUnexpectedEOF.
// The payload is freshly allocated and belongs to the caller.
func ReadFrame(r io.Reader, maxPayload uint32) (Frame, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: hdr[0], Channel: binary.BigEndian.Uint16(hdr[1:3])}
	size := binary.BigEndian.Uint32(hdr[3:7])
	if size > maxPayload {
		return Frame{}, fmt.Errorf("%w: payload of %d bytes, limit %d", ErrFrameTooLarge, size, maxPayload)
	}
	want := int(size) + 1 // payload and end octet
	buf := make([]byte, 0, min(want, eagerAlloc))
	for len(buf) < want {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow (about doubles)
		}
		end := min(cap(buf), want)
		n, err := io.ReadFull(r, buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
	}
	if buf[size] != FrameEnd {
		return Frame{}, fmt.Errorf("%w: 0x%02x", ErrFrameEnd, buf[size])
	}
	f.Payload = buf[:size:size]
	return f, nil
}

// AppendFrame appends a whole frame (header, payload, end octet) to dst.
func AppendFrame(dst []byte, typ uint8, channel uint16, payload []byte) []byte {
	dst = append(dst, typ)
	dst = appendShort(dst, channel)
	dst = appendLong(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	return append(dst, FrameEnd)
}

// AppendMethodFrame appends a whole method frame for m to dst: the payload
// is encoded in place and its size patched in afterwards, so nothing else
// is allocated.
func AppendMethodFrame(dst []byte, channel uint16, m Method) []byte {
	start := len(dst)
	dst = append(dst, TypeMethod)
	dst = appendShort(dst, channel)
	dst = append(dst, 0, 0, 0, 0)
	dst = AppendMethod(dst, m)
	binary.BigEndian.PutUint32(dst[start+3:], uint32(len(dst)-start-headerLen))
	return append(dst, FrameEnd)
}
