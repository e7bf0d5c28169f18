package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

const (
	// readBufferBytes is the bufio.Reader size per accepted connection:
	// one read syscall takes in many small frames.
	readBufferBytes = 64 << 10
	// retainReadBufferBytes is the largest frame buffer a reader keeps for
	// the next frame. Larger ones (rare: big appends, snapshots) are left
	// to the GC, so that an idle connection does not pin MaxFrameBytes.
	retainReadBufferBytes = 1 << 20
	// handshakeTimeout bounds how long an accepted connection may take to
	// send its handshake. A real peer sends it with its first frame, at
	// once; only a stray or hostile client is this slow.
	handshakeTimeout = 10 * time.Second
	// maxHandshakingConns bounds the accepted connections still waiting
	// for their handshake; more are closed at once. Real peers number a
	// handful and each gets through in one round trip.
	maxHandshakingConns = 64
	// acceptRetryDelay is the pause after an Accept error (e.g. out of file
	// descriptors), so the loop does not spin on it.
	acceptRetryDelay = 100 * time.Millisecond
)

var errTooManyHandshakes = errors.New("transport: too many connections waiting for their handshake")

func (t *Transport) acceptLoop(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if t.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("accept failed", "err", err)
			select {
			case <-time.After(acceptRetryDelay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		if err := t.track(conn); err != nil {
			conn.Close()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("refused connection", "remote", conn.RemoteAddr().String(), "err", err)
			continue
		}
		t.wg.Go(func() { t.serve(conn) })
	}
}

// serve is the reader goroutine of one accepted connection; it owns conn.
func (t *Transport) serve(conn net.Conn) {
	defer t.untrack(conn)
	remote := conn.RemoteAddr().String()
	br := bufio.NewReaderSize(conn, readBufferBytes)
	from, err := t.acceptHandshake(conn, br)
	if err != nil {
		if !t.closed.Load() {
			t.log.Warn("rejected connection", "remote", remote, "err", err)
		}
		return
	}
	t.log.Debug("peer connected", "peer", from, "remote", remote)
	err = t.readFrames(br, from)
	switch {
	case t.closed.Load():
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		// The peer hung up, or a newer connection from it replaced this one.
		t.log.Debug("peer disconnected", "peer", from, "remote", remote, "err", err)
	default:
		t.log.Warn("closing connection", "peer", from, "remote", remote, "err", err)
	}
}

// acceptHandshake reads and checks the handshake and makes conn the current
// connection from its sender.
func (t *Transport) acceptHandshake(conn net.Conn, br *bufio.Reader) (uint64, error) {
	if err := conn.SetReadDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return 0, fmt.Errorf("transport: setting handshake deadline: %w", err)
	}
	h, err := readHandshake(br)
	if err != nil {
		return 0, err
	}
	if err := h.check(t.cfg.ClusterID, t.cfg.ID); err != nil {
		return 0, err
	}
	// Idle is normal from here on: the sender only writes when Raft has
	// something to say, and TCP keepalive finds dead peers.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return 0, fmt.Errorf("transport: clearing handshake deadline: %w", err)
	}
	if err := t.claim(conn, h.from); err != nil {
		return 0, err
	}
	return h.from, nil
}

// readFrames delivers frames from one sender until the connection fails or
// a frame breaks the rules of doc.go.
func (t *Transport) readFrames(br *bufio.Reader, from uint64) error {
	c := t.counters(from)
	var buf []byte
	for {
		payload, err := readFrame(br, buf, t.cfg.MaxFrameBytes)
		if err != nil {
			return err
		}
		m, err := decodeMessage(payload)
		if err != nil {
			return err
		}
		if m.To != t.cfg.ID || m.From != from {
			return fmt.Errorf("%w: %s from %d to %d on the connection from %d", errBadMessage, m.Type, m.From, m.To, from)
		}
		c.received.Add(1)
		t.h.Process(m)
		if buf = payload[:0]; cap(buf) > retainReadBufferBytes {
			buf = nil
		}
	}
}

// track registers an accepted connection so that Close can close it.
func (t *Transport) track(conn net.Conn) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed.Load():
		return net.ErrClosed
	case t.mu.handshaking >= maxHandshakingConns:
		return errTooManyHandshakes
	}
	t.mu.conns[conn] = 0
	t.mu.handshaking++
	return nil
}

// claim records conn as the connection from sender `from`. An older one
// from the same sender is closed: the sender only redials after giving up on
// it, so whatever it still holds is stale, and this bounds the accepted
// connections to one per sender.
func (t *Transport) claim(conn net.Conn, from uint64) error {
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		return net.ErrClosed
	}
	t.mu.handshaking--
	t.mu.conns[conn] = from
	old := t.mu.bySender[from]
	t.mu.bySender[from] = conn
	t.mu.Unlock()
	if old != nil {
		t.log.Debug("replacing older connection", "peer", from, "remote", old.RemoteAddr().String())
		old.Close() // its reader sees net.ErrClosed and untracks it
	}
	return nil
}

// untrack forgets conn and closes it.
func (t *Transport) untrack(conn net.Conn) {
	t.mu.Lock()
	from := t.mu.conns[conn]
	delete(t.mu.conns, conn)
	if from == 0 {
		t.mu.handshaking--
	} else if t.mu.bySender[from] == conn {
		delete(t.mu.bySender, from)
	}
	t.mu.Unlock()
	conn.Close()
}
