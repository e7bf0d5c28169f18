package transport

// This file is the wire codec of doc.go: pure functions over bytes and
// io.Readers, with no net, so that golden tests and fuzzers can reach every
// branch.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

const (
	handshakeMagic   = "CFXRAFT1"
	handshakeBytes   = 32
	frameHeaderBytes = 4

	// eagerAllocBytes is the largest payload readFrame allocates in one go.
	// Beyond it the buffer grows (by doubling) only as bytes actually
	// arrive, so a peer that announces a frame of MaxFrameBytes and then
	// stalls pins at most what it has sent, not MaxFrameBytes.
	eagerAllocBytes = 1 << 20
)

var (
	errBadMagic      = errors.New("transport: bad handshake magic")
	errBadHandshake  = errors.New("transport: handshake rejected")
	errFrameTooLarge = errors.New("transport: frame larger than MaxFrameBytes")
	errBadMessage    = errors.New("transport: frame does not hold a valid message")
)

// handshake is the first thing on every connection (doc.go, Encoding).
type handshake struct {
	clusterID uint64
	from      uint64 // the dialling node
	to        uint64 // the node it meant to reach
}

// appendHandshake appends h's 32-byte encoding to dst.
func appendHandshake(dst []byte, h handshake) []byte {
	dst = append(dst, handshakeMagic...)
	dst = binary.LittleEndian.AppendUint64(dst, h.clusterID)
	dst = binary.LittleEndian.AppendUint64(dst, h.from)
	return binary.LittleEndian.AppendUint64(dst, h.to)
}

// readHandshake reads exactly handshakeBytes from r and decodes them.
func readHandshake(r io.Reader) (handshake, error) {
	var b [handshakeBytes]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return handshake{}, fmt.Errorf("transport: reading handshake: %w", err)
	}
	if string(b[:8]) != handshakeMagic {
		return handshake{}, fmt.Errorf("%w: %q", errBadMagic, b[:8])
	}
	return handshake{
		clusterID: binary.LittleEndian.Uint64(b[8:]),
		from:      binary.LittleEndian.Uint64(b[16:]),
		to:        binary.LittleEndian.Uint64(b[24:]),
	}, nil
}

// check reports why a receiver with the given cluster and node id must
// refuse h, or nil.
func (h handshake) check(clusterID, self uint64) error {
	switch {
	case h.clusterID != clusterID:
		return fmt.Errorf("%w: cluster id %d, want %d", errBadHandshake, h.clusterID, clusterID)
	case h.to != self:
		return fmt.Errorf("%w: recipient %d, but this is node %d", errBadHandshake, h.to, self)
	case h.from == 0 || h.from == self:
		// 0 is raft.None; a node never dials itself.
		return fmt.Errorf("%w: sender id %d", errBadHandshake, h.from)
	}
	return nil
}

// encodeFrame marshals m into a new buffer holding one complete frame. It
// refuses a message larger than maxFrameBytes, which the receiver would
// reject anyway (and close the connection, losing everything behind it).
func encodeFrame(m *raftpb.Message, maxFrameBytes int) ([]byte, error) {
	n := m.Size()
	if n > maxFrameBytes {
		return nil, fmt.Errorf("%w: %s of %d bytes, limit %d", errFrameTooLarge, m.Type, n, maxFrameBytes)
	}
	buf := make([]byte, frameHeaderBytes+n)
	binary.LittleEndian.PutUint32(buf, uint32(n))
	if _, err := m.MarshalToSizedBuffer(buf[frameHeaderBytes:]); err != nil {
		return nil, fmt.Errorf("transport: marshalling %s: %w", m.Type, err)
	}
	return buf, nil
}

// readFrame reads one frame from r and returns its payload. The payload
// reuses buf when it fits, so it is valid only until the next call. A clean
// end of input before a frame starts returns io.EOF itself, so a reader can
// tell a closed connection from a torn frame.
//
// The length is checked against maxFrameBytes before anything is allocated,
// and the returned slice never has a capacity above max(cap(buf),
// maxFrameBytes).
func readFrame(r io.Reader, buf []byte, maxFrameBytes int) ([]byte, error) {
	var hdr [frameHeaderBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("transport: reading frame header: %w", err)
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if uint64(n) > uint64(maxFrameBytes) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errFrameTooLarge, n, maxFrameBytes)
	}
	payload, err := readPayload(r, buf, int(n))
	if err != nil {
		return nil, fmt.Errorf("transport: reading %d-byte frame: %w", n, noEOF(err))
	}
	return payload, nil
}

// readPayload reads exactly n bytes, into buf if it is large enough.
func readPayload(r io.Reader, buf []byte, n int) ([]byte, error) {
	if n <= cap(buf) || n <= eagerAllocBytes {
		if n > cap(buf) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	// Grow with the data: each round at most doubles what has arrived.
	buf = make([]byte, 0, eagerAllocBytes)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*cap(buf)))
			buf = grown[:copy(grown, buf)]
		}
		got, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// noEOF turns an EOF inside a frame into io.ErrUnexpectedEOF: only an EOF
// between frames is a clean close.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeMessage unmarshals a frame payload. The message owns its memory
// (gogo-protobuf copies every bytes field), so the payload buffer may be
// reused as soon as this returns.
func decodeMessage(payload []byte) (raftpb.Message, error) {
	var m raftpb.Message
	if err := m.Unmarshal(payload); err != nil {
		return raftpb.Message{}, fmt.Errorf("%w: %w", errBadMessage, err)
	}
	return m, nil
}
