package command

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Limits.
const (
	// DefaultMaxFrameBytes bounds a whole frame, length field included:
	// Java's 16 MiB frameMaxLength plus a 64 KiB header margin.
	DefaultMaxFrameBytes = 16<<20 + 64<<10
	// MaxHeaderBytes is the largest header the 24-bit headerLen can state.
	MaxHeaderBytes = 1<<24 - 1

	// prefixBytes: the length field and the header-length word.
	prefixBytes          = 8
	minJSONHeaderBytes   = 2  // "{}"
	minBinaryHeaderBytes = 21 // the fixed part
	// eagerAllocBytes: frames up to this size get their buffer at once;
	// larger ones grow it as bytes arrive (see readN).
	eagerAllocBytes = 64 << 10
)

// ReadFrame reads one frame from r and decodes it. It reads exactly the
// frame's bytes, so r is left at the next frame; wrap a net.Conn in a
// bufio.Reader to avoid a read system call per field.
//
// maxFrameBytes bounds the whole frame (length field included); <= 0 means
// DefaultMaxFrameBytes. The lengths are checked against it and against each
// other before anything is allocated, and the buffer is never larger than
// the frame. Body aliases that buffer, which belongs to the returned command.
//
// At a clean end of stream (no byte of a new frame) ReadFrame returns io.EOF.
// Otherwise errors wrap ErrTruncated (and io.ErrUnexpectedEOF),
// ErrFrameTooLarge or ErrMalformed, or are r's own error. None leaves a
// stream worth reading on: close the connection.
func ReadFrame(r io.Reader, maxFrameBytes int) (*RemotingCommand, error) {
	maxFrameBytes = effectiveMax(maxFrameBytes)
	var prefix [prefixBytes]byte
	if _, err := io.ReadFull(r, prefix[:4]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, readError(err, "frame length")
	}
	length, err := checkLength(prefix[:4], maxFrameBytes)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, prefix[4:]); err != nil {
		return nil, readError(err, "header length")
	}
	typ, headerLen, err := checkHeaderWord(prefix[4:], length)
	if err != nil {
		return nil, err
	}
	rest, err := readN(r, length-4)
	if err != nil {
		return nil, readError(err, "frame")
	}
	return decodeRest(typ, rest[:headerLen], rest[headerLen:])
}

// DecodeFrame decodes the frame at the start of b and returns it with the
// number of bytes it took. If b holds only part of a frame, the error wraps
// ErrTruncated: read more and call again (lengths over maxFrameBytes are
// rejected as soon as the 4-byte length is in b). Body aliases b.
// maxFrameBytes is as for ReadFrame.
func DecodeFrame(b []byte, maxFrameBytes int) (*RemotingCommand, int, error) {
	maxFrameBytes = effectiveMax(maxFrameBytes)
	if len(b) < 4 {
		return nil, 0, fmt.Errorf("%w: %d of 4 length bytes", ErrTruncated, len(b))
	}
	length, err := checkLength(b[:4], maxFrameBytes)
	if err != nil {
		return nil, 0, err
	}
	if len(b) < prefixBytes {
		return nil, 0, fmt.Errorf("%w: %d of %d prefix bytes", ErrTruncated, len(b), prefixBytes)
	}
	typ, headerLen, err := checkHeaderWord(b[4:prefixBytes], length)
	if err != nil {
		return nil, 0, err
	}
	n := 4 + length
	if len(b) < n {
		return nil, 0, fmt.Errorf("%w: %d of %d frame bytes", ErrTruncated, len(b), n)
	}
	cmd, err := decodeRest(typ, b[prefixBytes:prefixBytes+headerLen], b[prefixBytes+headerLen:n])
	if err != nil {
		return nil, 0, err
	}
	return cmd, n, nil
}

// AppendFrame appends cmd as one frame to dst, with its header encoded by
// cmd.SerializeType (a reply must use its request's; NewResponse does that).
// On error it returns dst unchanged and an error wrapping ErrInvalidCommand
// or ErrFrameTooLarge (a header over MaxHeaderBytes or a frame over 2 GiB).
// It does not apply a peer's frame limit: the caller decides how much to
// put in one reply.
func AppendFrame(dst []byte, cmd *RemotingCommand) ([]byte, error) {
	if cmd == nil {
		return dst, invalid("nil command")
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0) // patched below
	var err error
	switch cmd.SerializeType {
	case JSON:
		dst = appendJSONHeader(dst, cmd)
	case RocketMQ:
		dst, err = appendBinaryHeader(dst, cmd)
	default:
		err = invalid("serialize type %d", cmd.SerializeType)
	}
	if err != nil {
		return dst[:start], err
	}
	headerLen := len(dst) - start - prefixBytes
	if headerLen > MaxHeaderBytes {
		return dst[:start], fmt.Errorf("%w: header of %d bytes, the format allows %d", ErrFrameTooLarge, headerLen, MaxHeaderBytes)
	}
	length := 4 + int64(headerLen) + int64(len(cmd.Body))
	if length > math.MaxInt32 {
		return dst[:start], fmt.Errorf("%w: frame length %d does not fit int32", ErrFrameTooLarge, length)
	}
	dst = append(dst, cmd.Body...)
	binary.BigEndian.PutUint32(dst[start:], uint32(length))
	binary.BigEndian.PutUint32(dst[start+4:], uint32(cmd.SerializeType)<<24|uint32(headerLen))
	return dst, nil
}

func effectiveMax(maxFrameBytes int) int {
	if maxFrameBytes <= 0 {
		return DefaultMaxFrameBytes
	}
	return maxFrameBytes
}

// checkLength validates the length field: it must cover the header-length
// word, and the whole frame must fit maxFrameBytes. It returns the length.
func checkLength(b []byte, maxFrameBytes int) (int, error) {
	length := int64(int32(binary.BigEndian.Uint32(b)))
	if length < 4 {
		return 0, malformed("frame length %d, need at least 4", length)
	}
	if length+4 > int64(maxFrameBytes) {
		return 0, fmt.Errorf("%w: %d-byte frame, limit %d", ErrFrameTooLarge, length+4, maxFrameBytes)
	}
	return int(length), nil
}

// checkHeaderWord validates the serialize type and the header length
// against the frame length and the smallest header of that type.
func checkHeaderWord(b []byte, length int) (SerializeType, int, error) {
	word := binary.BigEndian.Uint32(b)
	typ := SerializeType(word >> 24)
	headerLen := int(word & 0xFFFFFF)
	var minLen int
	switch typ {
	case JSON:
		minLen = minJSONHeaderBytes
	case RocketMQ:
		minLen = minBinaryHeaderBytes
	default:
		return 0, 0, malformed("unknown serialize type %d", byte(typ))
	}
	if headerLen > length-4 {
		return 0, 0, malformed("header length %d, but the frame has %d bytes after the header-length word", headerLen, length-4)
	}
	if headerLen < minLen {
		return 0, 0, malformed("%s header length %d, need at least %d", typ, headerLen, minLen)
	}
	return typ, headerLen, nil
}

// decodeRest decodes the header and attaches the body (capacity clipped, so
// an append to Body cannot overwrite bytes after it).
func decodeRest(typ SerializeType, header, body []byte) (*RemotingCommand, error) {
	cmd := &RemotingCommand{SerializeType: typ}
	var err error
	if typ == JSON {
		err = decodeJSONHeader(header, cmd)
	} else {
		err = decodeBinaryHeader(header, cmd)
	}
	if err != nil {
		return nil, err
	}
	if cmd.ExtFields == nil {
		cmd.ExtFields = map[string]string{}
	}
	if len(body) > 0 {
		cmd.Body = body[:len(body):len(body)]
	}
	return cmd, nil
}

// readN reads exactly n bytes. Up to eagerAllocBytes it allocates n at once;
// beyond, it doubles the buffer as bytes arrive (never past n), so memory
// follows what the peer sent rather than what it announced.
func readN(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, min(n, eagerAllocBytes))
	got := 0
	for {
		m, err := io.ReadFull(r, buf[got:])
		got += m
		if err != nil {
			return nil, err
		}
		if got == n {
			return buf, nil
		}
		next := make([]byte, min(2*len(buf), n))
		copy(next, buf)
		buf = next
	}
}

// readError turns an end of stream inside a frame into ErrTruncated.
func readError(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream ended in the %s: %w", ErrTruncated, what, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("remoting: reading the %s: %w", what, err)
}
